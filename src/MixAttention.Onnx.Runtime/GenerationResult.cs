namespace MixAttention.Onnx.Runtime;

/// <summary>A finished request.</summary>
public sealed record GenerationResult(int Request, IReadOnlyList<long> Tokens, FinishReason Finish, TimeSpan PrefillTime, TimeSpan DecodeTime);
