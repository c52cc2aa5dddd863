using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace MixAttention.Onnx.Runtime;

/// <summary>Small host tensors fed each step and logits read back; shared by both drivers.</summary>
internal static class StepIo
{
    /// <summary>Token ids (or positions) as an int32 / int64 tensor <c>[rows, cols]</c> over a fresh managed array.</summary>
    public static OrtValue Int(TensorElementType type, long[] values, long[] shape) => type switch
    {
        TensorElementType.Int64 => OrtValue.CreateTensorValueFromMemory(values, shape),
        TensorElementType.Int32 => OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(values, v => checked((int)v)), shape),
        _ => throw new MixAttentionException($"integer input of type {type} is not supported (int32, int64)."),
    };

    /// <summary>
    /// An all-ones <c>attention_mask [rows, total]</c> over one buffer kept from step to step (grown by doubling): every
    /// prefix of it is such a mask, and ORT reads only the shape's elements. A fresh array per step was
    /// <c>rows × total</c> int64s — 4.2 MB a step at 16 × 32K — on .NET's large-object heap, whose collections then ran
    /// inside whatever was timed next (docs/benchmarks.md).
    /// </summary>
    internal sealed class OnesMask
    {
        private long[] _int64 = [];
        private int[] _int32 = [];

        /// <summary>The mask as a tensor of <paramref name="type"/> (int64 or int32); valid while no later call grows the buffer and the value is not disposed.</summary>
        public OrtValue Create(TensorElementType type, int rows, int total)
        {
            int n = checked(rows * total);
            long[] shape = { rows, total };
            switch (type)
            {
                case TensorElementType.Int64:
                    if (_int64.Length < n) { _int64 = new long[Grow(_int64.Length, n)]; Array.Fill(_int64, 1L); }
                    return OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _int64.AsMemory(0, n), shape);
                case TensorElementType.Int32:
                    if (_int32.Length < n) { _int32 = new int[Grow(_int32.Length, n)]; Array.Fill(_int32, 1); }
                    return OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _int32.AsMemory(0, n), shape);
                default:
                    throw new MixAttentionException($"attention_mask of type {type} is not supported (int32, int64).");
            }
        }

        private static int Grow(int have, int need) => (int)Math.Min(Array.MaxLength, Math.Max(need, 2L * have));
    }

    /// <summary>Copies row <paramref name="row"/>, positions <c>[from, from + count)</c> of logits <c>[B, S, V]</c> into floats.</summary>
    public static float[] Rows(OrtValue logits, int row, int from, int count)
    {
        var result = new float[count * (int)logits.GetTensorTypeAndShape().Shape[2]];
        RowsInto(logits, row, from, count, result);
        return result;
    }

    /// <summary>As <see cref="Rows"/>, into <paramref name="result"/> (<c>count × V</c> floats).</summary>
    public static void RowsInto(OrtValue logits, int row, int from, int count, Span<float> result)
    {
        var shape = logits.GetTensorTypeAndShape();
        var dims = shape.Shape;
        int s = (int)dims[1], v = (int)dims[2];
        long start = ((long)row * s + from) * v;
        if (result.Length != count * v) throw new ArgumentException($"{count} × {v} logits do not fit {result.Length} floats.", nameof(result));
        switch (shape.ElementDataType)
        {
            case TensorElementType.Float:
                logits.GetTensorDataAsSpan<float>().Slice((int)start, result.Length).CopyTo(result);
                break;
            // Vectorised: ORT's Float16/BFloat16 structs convert one element at a time in software, which cost ~2.5 ms
            // per step for 16 rows of a 32K vocabulary (measured on the GPU machine: longer than the step's kernels).
            case TensorElementType.Float16:
                TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<Float16, Half>(logits.GetTensorDataAsSpan<Float16>().Slice((int)start, result.Length)), result);
                break;
            case TensorElementType.BFloat16:
                BFloat16ToSingle(MemoryMarshal.Cast<BFloat16, ushort>(logits.GetTensorDataAsSpan<BFloat16>().Slice((int)start, result.Length)), result);
                break;
            default:
                throw new MixAttentionException($"logits of type {shape.ElementDataType} are not supported.");
        }
    }

    /// <summary>bfloat16 → float: the 16 bits are the float's upper half.</summary>
    internal static void BFloat16ToSingle(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        var bits = MemoryMarshal.Cast<float, uint>(dst);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + Vector256<ushort>.Count <= src.Length; i += Vector256<ushort>.Count)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Create(src.Slice(i, Vector256<ushort>.Count)));
                (lo << 16).CopyTo(bits.Slice(i));
                (hi << 16).CopyTo(bits.Slice(i + Vector256<uint>.Count));
            }
        for (; i < src.Length; i++) bits[i] = (uint)src[i] << 16;
    }
}
