using MixAttention.Onnx.Runtime;

namespace MixAttention.Onnx.Cli;

internal sealed record BenchOptions(int Context, int Batch, int TimedSteps, int Chunk, ExecutionDevice Device, bool CudaGraph, int CheckGraph, bool DeviceLogits);
