namespace MixAttention.Onnx.Cli;

/// <summary>Host ms per CUDA-graph step in one timed round, by phase (InPlaceCacheSession.CudaGraphStepTime).</summary>
internal sealed record GraphPhases(double InputsMs, double ReplayMs, double LogitsMs);
