namespace MixAttention.Onnx.Chat;

/// <summary>Settings of a <see cref="MixAttentionChatClient"/>; per-call <c>ChatOptions</c> override the defaults.</summary>
public sealed record MixAttentionChatClientOptions
{
    /// <summary>The model id reported in responses (and by <c>/v1/models</c> in the sample server).</summary>
    public string ModelId { get; init; } = "mixattention";
    /// <summary>Requests that may wait for a free batch slot; one more is refused with <see cref="ChatCapacityException"/>.</summary>
    public int MaxQueuedRequests { get; init; } = 16;
    /// <summary>Reply length when <c>ChatOptions.MaxOutputTokens</c> is not set (always bounded by the session's max length).</summary>
    public int DefaultMaxOutputTokens { get; init; } = 256;
    /// <summary>Temperature when <c>ChatOptions.Temperature</c> is not set (1, as OpenAI's API; 0 = greedy).</summary>
    public float DefaultTemperature { get; init; } = 1f;

    internal void Validate()
    {
        if (string.IsNullOrWhiteSpace(ModelId)) throw new MixAttentionException("MixAttentionChatClientOptions.ModelId must not be empty.");
        if (MaxQueuedRequests < 0) throw new MixAttentionException($"MixAttentionChatClientOptions.MaxQueuedRequests must be >= 0, got {MaxQueuedRequests}.");
        if (DefaultMaxOutputTokens < 1) throw new MixAttentionException($"MixAttentionChatClientOptions.DefaultMaxOutputTokens must be >= 1, got {DefaultMaxOutputTokens}.");
        if (!(DefaultTemperature >= 0) || float.IsInfinity(DefaultTemperature)) throw new MixAttentionException($"MixAttentionChatClientOptions.DefaultTemperature must be a finite number >= 0, got {DefaultTemperature}.");
    }
}
