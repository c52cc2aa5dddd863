namespace MixAttention.Onnx.Runtime;

/// <summary>Why a sequence stopped.</summary>
public enum FinishReason
{
    /// <summary>A stop token was generated.</summary>
    Stop,
    /// <summary><see cref="GenerationOptions.MaxNewTokens"/> reached, or the session's max length.</summary>
    Length,
}
