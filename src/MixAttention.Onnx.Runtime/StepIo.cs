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

    /// <summary>Copies row <paramref name="row"/>, positions <c>[from, from + count)</c> of logits <c>[B, S, V]</c> into floats.</summary>
    public static float[] Rows(OrtValue logits, int row, int from, int count)
    {
        var shape = logits.GetTensorTypeAndShape();
        var dims = shape.Shape;
        int s = (int)dims[1], v = (int)dims[2];
        long start = ((long)row * s + from) * v;
        var result = new float[count * v];
        switch (shape.ElementDataType)
        {
            case TensorElementType.Float:
                logits.GetTensorDataAsSpan<float>().Slice((int)start, result.Length).CopyTo(result);
                break;
            case TensorElementType.Float16:
            {
                var src = logits.GetTensorDataAsSpan<Float16>().Slice((int)start, result.Length);
                for (int i = 0; i < result.Length; i++) result[i] = (float)src[i];
                break;
            }
            case TensorElementType.BFloat16:
            {
                var src = logits.GetTensorDataAsSpan<BFloat16>().Slice((int)start, result.Length);
                for (int i = 0; i < result.Length; i++) result[i] = (float)src[i];
                break;
            }
            default:
                throw new MixAttentionException($"logits of type {shape.ElementDataType} are not supported.");
        }
        return result;
    }
}
