namespace MixAttention.Onnx.Runtime;

/// <summary>Where the session runs and where its KV caches live.</summary>
public enum ExecutionDevice
{
    /// <summary>ONNX Runtime's CPU execution provider; caches in host memory.</summary>
    Cpu,
    /// <summary>ONNX Runtime's CUDA execution provider; caches in device memory (ORT's CUDA allocator).</summary>
    Cuda,
}
