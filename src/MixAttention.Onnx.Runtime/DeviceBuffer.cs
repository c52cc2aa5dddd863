using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using MixAttention.Onnx.Interop;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// One block of cache memory on the session's device: 64-byte aligned host memory on CPU, ORT's CUDA allocator
/// on GPU (cudaMalloc above 2 GiB). Owns the memory; the <see cref="OrtValue"/> views made over it (<see cref="CreateView"/>) do not,
/// and must be disposed before this buffer.
/// </summary>
internal sealed class DeviceBuffer : SafeHandle
{
    private readonly OrtValue? _ortAllocation;
    private readonly bool _cudaMalloc; // device memory from CudaRuntime.Malloc (larger than an ORT tensor's span can address)

    private DeviceBuffer(IntPtr pointer, long bytes, OrtMemoryInfo info, OrtValue? ortAllocation, bool cudaMalloc = false)
        : base(IntPtr.Zero, ownsHandle: true)
    {
        _cudaMalloc = cudaMalloc;
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
    /// Allocates device memory: through the session's ORT allocator (CUDA) as one owning uint8 tensor up to 2 GiB (ORT's C#
    /// API exposes the address of a tensor only as a <see cref="Span{T}"/>), and with <c>cudaMalloc</c> of the CUDA runtime
    /// that ORT's provider loaded above that (a paged pool or a wide batch of long caches).
    /// </summary>
    public static unsafe DeviceBuffer AllocateDevice(OrtAllocator allocator, OrtMemoryInfo info, long bytes)
    {
        if (bytes > int.MaxValue)
        {
            IntPtr p;
            try { p = CudaRuntime.Malloc(bytes, info.Id); }
            catch (MixAttentionException e)
            {
                throw new MixAttentionException($"cannot allocate a KV cache tensor of {bytes:N0} bytes on the GPU ({e.Message}); lower MaxBatch or MaxLength.", e);
            }
            return new DeviceBuffer(p, bytes, info, null, cudaMalloc: true);
        }
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

    /// <summary>Whether the memory is host memory (the CPU execution provider), which the copies below read directly.</summary>
    public bool IsHost => _ortAllocation is null && !_cudaMalloc;

    /// <summary>Copies <paramref name="destination"/>.Length bytes at <paramref name="offset"/> into host memory.</summary>
    public unsafe void Read(long offset, Span<byte> destination)
    {
        CheckRange(offset, destination.Length);
        if (IsHost) new ReadOnlySpan<byte>((byte*)handle + offset, destination.Length).CopyTo(destination);
        else fixed (byte* d = destination) CudaRuntime.Copy((IntPtr)d, handle + (nint)offset, destination.Length, toDevice: false);
    }

    /// <summary>Copies <paramref name="source"/> from host memory to <paramref name="offset"/>.</summary>
    public unsafe void Write(long offset, ReadOnlySpan<byte> source)
    {
        CheckRange(offset, source.Length);
        if (IsHost) source.CopyTo(new Span<byte>((byte*)handle + offset, source.Length));
        else fixed (byte* s = source) CudaRuntime.Copy(handle + (nint)offset, (IntPtr)s, source.Length, toDevice: true);
    }

    /// <summary>Copies <paramref name="bytes"/> bytes from offset <paramref name="from"/> to offset <paramref name="to"/> of this buffer.</summary>
    public unsafe void CopyWithin(long from, long to, long bytes)
    {
        CheckRange(from, bytes);
        CheckRange(to, bytes);
        if (IsHost) Buffer.MemoryCopy((byte*)handle + from, (byte*)handle + to, bytes, bytes);
        else CudaRuntime.CopyOnDevice(handle + (nint)to, handle + (nint)from, bytes);
    }

    private void CheckRange(long offset, long bytes)
    {
        if (offset < 0 || bytes < 0 || offset + bytes > Bytes) throw new ArgumentOutOfRangeException(nameof(offset), $"bytes [{offset}, {offset + bytes}) outside a buffer of {Bytes} bytes");
    }

    /// <inheritdoc />
    protected override unsafe bool ReleaseHandle()
    {
        if (_ortAllocation is not null) _ortAllocation.Dispose();
        else if (_cudaMalloc) CudaRuntime.Free(handle);
        else NativeMemory.AlignedFree((void*)handle);
        return true;
    }
}
