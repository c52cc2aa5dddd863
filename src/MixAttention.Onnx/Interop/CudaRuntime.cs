using System.Runtime.InteropServices;

namespace MixAttention.Onnx.Interop;

/// <summary>
/// The CUDA runtime (<c>cudaMemcpy</c>, page-locked memory, profiler ranges) from the library ORT's CUDA provider loaded (found by its soname, so the same
/// library and context): the fallback for host ↔ device copies of the graph decode step.
/// </summary>
internal static class CudaRuntime
{
    private const int HostToDevice = 1, DeviceToHost = 2, DeviceToDevice = 3;
    private static readonly string[] Names = { "libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0", "libcudart.so", "cudart64_12.dll" };
    private static unsafe delegate* unmanaged<IntPtr, IntPtr, nuint, int, int> _memcpy;
    private static unsafe delegate* unmanaged<int> _synchronize;
    private static unsafe delegate* unmanaged<int> _profilerStart, _profilerStop;
    private static unsafe delegate* unmanaged<IntPtr*, nuint, uint, int> _hostAlloc;
    private static unsafe delegate* unmanaged<IntPtr, int> _freeHost;
    private static unsafe delegate* unmanaged<IntPtr*, nuint, int> _malloc;
    private static unsafe delegate* unmanaged<IntPtr, int> _free;
    private static unsafe delegate* unmanaged<int, int> _setDevice;
    private static readonly Lock Gate = new();

    /// <summary><c>cudaProfilerStart</c> (<paramref name="start"/>) or <c>cudaProfilerStop</c>: bounds the capture range of a profiler run with <c>nsys --capture-range=cudaProfilerApi</c>.</summary>
    public static unsafe void Profiler(bool start)
    {
        Load();
        int e = start ? _profilerStart() : _profilerStop();
        if (e != 0) throw new MixAttentionException($"cudaProfiler{(start ? "Start" : "Stop")} failed with CUDA error {e}.");
    }

    /// <summary>
    /// Synchronous copy of <paramref name="bytes"/> bytes; host → device when <paramref name="toDevice"/>, else device →
    /// host. From page-locked host memory cudaMemcpy returns after the transfer; from pageable memory it may return
    /// while the DMA is still in flight (and ORT's stream does not wait for the legacy stream), so the device is synchronised.
    /// </summary>
    public static unsafe void Copy(IntPtr dst, IntPtr src, long bytes, bool toDevice, bool pageLocked = false)
    {
        Load();
        int e = _memcpy(dst, src, (nuint)bytes, toDevice ? HostToDevice : DeviceToHost);
        if (e == 0 && toDevice && !pageLocked) e = _synchronize();
        if (e != 0) throw new MixAttentionException($"cudaMemcpy ({(toDevice ? "host to device" : "device to host")}, {bytes} bytes) failed with CUDA error {e}.");
    }

    /// <summary>
    /// Copy of <paramref name="bytes"/> bytes within device memory (paged caches: a copy-on-write block of a fork). A
    /// device-to-device cudaMemcpy returns before the copy ends and ORT's stream does not wait for the legacy stream, so
    /// the device is synchronised: the next model call reads the finished copy.
    /// </summary>
    public static unsafe void CopyOnDevice(IntPtr dst, IntPtr src, long bytes)
    {
        Load();
        int e = _memcpy(dst, src, (nuint)bytes, DeviceToDevice);
        if (e == 0) e = _synchronize();
        if (e != 0) throw new MixAttentionException($"cudaMemcpy (device to device, {bytes} bytes) failed with CUDA error {e}.");
    }

    /// <summary>
    /// <paramref name="bytes"/> of device memory on device <paramref name="device"/> (<c>cudaMalloc</c>): for cache
    /// tensors larger than ORT's C# API can address (its tensors expose their address as a span of at most 2 GiB).
    /// Freed with <see cref="Free"/>.
    /// </summary>
    public static unsafe IntPtr Malloc(long bytes, int device)
    {
        Load();
        if (_malloc == null || _free == null || _setDevice == null)
            throw new MixAttentionException("the CUDA runtime library has no cudaMalloc / cudaFree / cudaSetDevice.");
        int e = _setDevice(device);
        IntPtr p = IntPtr.Zero;
        if (e == 0) e = _malloc(&p, (nuint)bytes);
        if (e != 0) throw new MixAttentionException($"cudaMalloc of {bytes:N0} bytes on device {device} failed with CUDA error {e}{(e == 2 ? " (out of memory)" : "")}.");
        return p;
    }

    /// <summary>Frees memory from <see cref="Malloc"/>.</summary>
    public static unsafe void Free(IntPtr p)
    {
        if (p != IntPtr.Zero && _free != null) _free(p);
    }

    /// <summary>Page-locked host memory (<c>cudaHostAlloc</c>), or <see cref="IntPtr.Zero"/> when the CUDA runtime cannot be loaded or the allocation fails.</summary>
    public static unsafe IntPtr TryHostAlloc(long bytes)
    {
        if (!TryLoad() || _hostAlloc == null) return IntPtr.Zero;
        IntPtr p;
        return _hostAlloc(&p, (nuint)bytes, 0) == 0 ? p : IntPtr.Zero;
    }

    /// <summary>Frees memory from <see cref="TryHostAlloc"/>.</summary>
    public static unsafe void FreeHost(IntPtr p)
    {
        if (p != IntPtr.Zero && _freeHost != null) _freeHost(p);
    }

    private static bool TryLoad()
    {
        try
        {
            Load();
            return true;
        }
        catch (MixAttentionException)
        {
            return false;
        }
    }

    private static unsafe void Load()
    {
        if (_memcpy != null) return;
        lock (Gate)
        {
            if (_memcpy != null) return;
            foreach (var name in Names)
            {
                if (!NativeLibrary.TryLoad(name, out var lib)) continue;
                if (!NativeLibrary.TryGetExport(lib, "cudaMemcpy", out var copy) || !NativeLibrary.TryGetExport(lib, "cudaDeviceSynchronize", out var sync)
                    || !NativeLibrary.TryGetExport(lib, "cudaProfilerStart", out var pStart) || !NativeLibrary.TryGetExport(lib, "cudaProfilerStop", out var pStop)) continue;
                _synchronize = (delegate* unmanaged<int>)sync;
                _profilerStart = (delegate* unmanaged<int>)pStart;
                _profilerStop = (delegate* unmanaged<int>)pStop;
                if (NativeLibrary.TryGetExport(lib, "cudaHostAlloc", out var hostAlloc) && NativeLibrary.TryGetExport(lib, "cudaFreeHost", out var freeHost))
                {
                    _hostAlloc = (delegate* unmanaged<IntPtr*, nuint, uint, int>)hostAlloc;
                    _freeHost = (delegate* unmanaged<IntPtr, int>)freeHost;
                }
                if (NativeLibrary.TryGetExport(lib, "cudaMalloc", out var malloc) && NativeLibrary.TryGetExport(lib, "cudaFree", out var free)
                    && NativeLibrary.TryGetExport(lib, "cudaSetDevice", out var setDevice))
                {
                    _malloc = (delegate* unmanaged<IntPtr*, nuint, int>)malloc;
                    _free = (delegate* unmanaged<IntPtr, int>)free;
                    _setDevice = (delegate* unmanaged<int, int>)setDevice;
                }
                _memcpy = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, int>)copy;
                return;
            }
            throw new MixAttentionException($"No CUDA runtime library ({string.Join(", ", Names)}) could be loaded: CUDA-graph decode and the forks and swaps of paged caches on the GPU need it for copies (OrtEnv.CopyTensors has no CUDA data transfer), profiler ranges for cudaProfilerStart/Stop.");
        }
    }
}
