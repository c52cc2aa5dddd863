namespace MixAttention.Onnx.Chat;

/// <summary>The rendered prompt leaves no room in the session's max length for a reply. Nothing ran.</summary>
public sealed class ContextLengthExceededException : MixAttentionException
{
    /// <summary>Creates the exception.</summary>
    public ContextLengthExceededException(int promptTokens, int maxLength)
        : base($"the prompt has {promptTokens} tokens, but this model's context (the session's MaxLength) holds {maxLength} tokens with at least one for the reply; shorten the messages.")
    {
        PromptTokens = promptTokens;
        MaxLength = maxLength;
    }

    /// <summary>Tokens of the rendered prompt.</summary>
    public int PromptTokens { get; }
    /// <summary>The session's max length (prompt + reply).</summary>
    public int MaxLength { get; }
}
