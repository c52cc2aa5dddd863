using MixAttention.Onnx.Interop;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// A region of a CUDA profiler's capture (<c>nsys profile --capture-range=cudaProfilerApi</c>): <c>cudaProfilerStart</c>
/// when created, <c>cudaProfilerStop</c> when disposed, from the CUDA runtime ORT's CUDA provider loaded. Lets a
/// profile hold only the decode steps of a benchmark, not its model load and prefill.
/// </summary>
public sealed class CudaProfilerRange : IDisposable
{
    private bool _open;

    /// <summary>Starts the capture (cudaProfilerStart).</summary>
    /// <exception cref="MixAttentionException">No CUDA runtime library could be loaded, or the call failed.</exception>
    public CudaProfilerRange()
    {
        CudaRuntime.Profiler(start: true);
        _open = true;
    }

    /// <summary>Stops the capture (cudaProfilerStop); later calls do nothing.</summary>
    public void Dispose()
    {
        if (!_open) return;
        _open = false;
        CudaRuntime.Profiler(start: false);
    }
}
