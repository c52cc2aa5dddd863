using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// One block of cache memory on the session's device: 64-byte aligned host memory on CPU, ORT's CUDA allocator
/// on GPU. Owns the memory; the <see cref="OrtValue"/> views made over it (<see cref="CreateView"/>) do not,
/// and must be disposed before this buffer.
/// </summary>
internal sealed class DeviceBuffer : SafeHandle
{
    private readonly OrtValue? _ortAllocation;

    private DeviceBuffer(IntPtr pointer, long bytes, OrtMemoryInfo info, OrtValue? ortAllocation)
        : base(IntPtr.Zero, ownsHandle: true)
    {
        SetHandle(pointer);
        Bytes = bytes;
        MemoryInfo = info;
        _ortAllocation = ortAllocation;
    }

    /// <summary>Size in bytes.</summary>
    public long Bytes { get; }

    /// <summary>Where the memory lives.</summary>
    public OrtMemoryInfo MemoryInfo { get; }

    /// <summary>Start address (host or device). Valid while this buffer is alive.</summary>
    public IntPtr Pointer => handle;

    /// <inheritdoc />
    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <summary>Allocates <paramref name="bytes"/> host bytes, 64-byte aligned, optionally filled with a float pattern.</summary>
    public static unsafe DeviceBuffer AllocateHost(long bytes, float? fill)
    {
        void* p;
        try { p = NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), 64); }
        catch (OutOfMemoryException e)
        {
            throw new MixAttentionException($"cannot allocate a KV cache tensor of {bytes:N0} bytes in host memory; lower MaxBatch or MaxLength.", e);
        }
        if (fill is { } f)
        {
            // In spans of at most 2^30 floats (a Span's length is an int).
            long count = bytes / sizeof(float);
            for (long at = 0; at < count; at += 1 << 30)
                new Span<float>((float*)p + at, (int)Math.Min(1L << 30, count - at)).Fill(f);
        }
        else NativeMemory.Clear(p, (nuint)bytes);
        return new DeviceBuffer((IntPtr)p, bytes, OrtMemoryInfo.DefaultInstance, null);
    }

    /// <summary>
    /// Allocates device memory through an ORT allocator (CUDA) as one owning uint8 tensor. ORT's C# API exposes the
    /// address of such a tensor only as a <see cref="Span{T}"/>, so one allocation is limited to 2 GiB.
    /// </summary>
    public static unsafe DeviceBuffer AllocateDevice(OrtAllocator allocator, OrtMemoryInfo info, long bytes)
    {
        if (bytes > int.MaxValue)
            throw new MixAttentionException($"a KV cache tensor of {bytes} bytes exceeds the 2 GiB single-allocation limit of this runtime on GPU; use fewer batch slots or a shorter MaxLength.");
        OrtValue value;
        try { value = OrtValue.CreateAllocatedTensorValue(allocator, Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.UInt8, new[] { Math.Max(bytes, 1) }); }
        catch (OnnxRuntimeException e)
        {
            throw new MixAttentionException($"cannot allocate a KV cache tensor of {bytes:N0} bytes on the GPU ({e.Message.Split('\n', 2)[0]}); lower MaxBatch or MaxLength.", e);
        }
        try
        {
            // The span is only used for its address: device memory is never dereferenced here.
            var span = value.GetTensorMutableRawData();
            IntPtr pointer = (IntPtr)Unsafe.AsPointer(ref MemoryMarshal.GetReference(span));
            return new DeviceBuffer(pointer, bytes, info, value);
        }
        catch
        {
            value.Dispose();
            throw;
        }
    }

    /// <summary>
    /// An <see cref="OrtValue"/> over <paramref name="bytes"/> bytes at <paramref name="offset"/>: no copy, does not own
    /// the memory; valid while this buffer is alive.
    /// </summary>
    public OrtValue CreateView(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType type, long[] shape, long offset, long bytes)
    {
        if (offset < 0 || offset + bytes > Bytes) throw new ArgumentOutOfRangeException(nameof(offset), $"view [{offset}, {offset + bytes}) outside a buffer of {Bytes} bytes");
        return OrtValue.CreateTensorValueWithData(MemoryInfo, type, shape, handle + (nint)offset, bytes);
    }

    /// <inheritdoc />
    protected override unsafe bool ReleaseHandle()
    {
        if (_ortAllocation is not null) _ortAllocation.Dispose();
        else NativeMemory.AlignedFree((void*)handle);
        return true;
    }
}
