namespace MixAttention.Onnx.Runtime;

/// <summary>Host time of CUDA-graph decode steps by phase (<see cref="InPlaceCacheSession.CudaGraphStepTime"/>).</summary>
/// <param name="Inputs">copying the step's inputs (ids, positions, lengths) to the device.</param>
/// <param name="Replay">ORT's run of the captured graph: the launch and the wait for the GPU to finish it.</param>
/// <param name="Logits">copying the logits to the host (zero for steps that leave them on the device).</param>
public readonly record struct CudaGraphStepTime(TimeSpan Inputs, TimeSpan Replay, TimeSpan Logits);
