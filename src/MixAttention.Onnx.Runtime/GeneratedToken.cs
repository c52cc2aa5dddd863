namespace MixAttention.Onnx.Runtime;

/// <summary>A token as it is produced (streaming).</summary>
/// <param name="Request">Index of the request.</param>
/// <param name="Token">The token id.</param>
/// <param name="Index">0 for the first generated token.</param>
/// <param name="Finish">Set on the request's last token.</param>
public readonly record struct GeneratedToken(int Request, long Token, int Index, FinishReason? Finish);
