namespace MixAttention.Onnx.Runtime;

/// <summary>One prompt to complete.</summary>
public sealed record GenerationRequest(IReadOnlyList<long> Prompt, GenerationOptions Options);
