namespace MixAttention.Onnx.ChatServer;

/// <summary>
/// The server's settings, section <c>ChatServer</c> of the configuration (command line <c>--ChatServer:MaxBatch=8</c>,
/// environment <c>ChatServer__MaxBatch=8</c>, appsettings.json).
/// </summary>
internal sealed record ChatServerSettings
{
    /// <summary>Folder with model.onnx; null: the bundled demo model, converted at start.</summary>
    public string? Model { get; init; }
    /// <summary>Folder with tokenizer.json and tokenizer_config.json (default: the model folder; graphs/demo for the demo model).</summary>
    public string? Tokenizer { get; init; }
    /// <summary>The id clients send as "model" (default: the model folder's name, "mixattention-demo" for the demo).</summary>
    public string? ModelId { get; init; }
    /// <summary>Batch slots: requests generating at once (the KV caches are preallocated for all of them).</summary>
    public int MaxBatch { get; init; } = 8;
    /// <summary>Tokens per sequence (prompt + reply); null: the model's context length from genai_config.json / config.json, at most 2048.</summary>
    public int? MaxLength { get; init; }
    /// <summary>
    /// Paged models (converted with --paged): KV blocks of the pool, shared by all slots by their actual length; null:
    /// enough for every slot at MaxLength. Fewer blocks let more slots share the memory (the loop preempts and resumes
    /// requests when they run short).
    /// </summary>
    public int? KvBlocks { get; init; }
    /// <summary>Longest prefill call.</summary>
    public int PrefillChunk { get; init; } = 64;
    /// <summary>Requests that may wait for a slot; more are answered 429.</summary>
    public int MaxQueue { get; init; } = 16;
    /// <summary>Reply length when a request sets no max_tokens.</summary>
    public int DefaultMaxTokens { get; init; } = 128;

    public static ChatServerSettings From(IConfiguration configuration) =>
        configuration.GetSection("ChatServer").Get<ChatServerSettings>() ?? new ChatServerSettings();
}
