namespace MixAttention.Onnx.Runtime;

/// <summary>Sizes of a decoding session: batch slots, longest sequence, prefill chunk.</summary>
public sealed record SessionConfig
{
    /// <summary>Batch slots (concurrent sequences).</summary>
    public int MaxBatch { get; init; } = 1;

    /// <summary>Longest sequence (prompt + generated) a slot holds; the capacity of global caches.</summary>
    public int MaxLength { get; init; } = 2048;

    /// <summary>
    /// Longest prefill call: a longer prompt runs in several calls. Ring caches that other layers read get
    /// <c>window + chunk − 1</c> slots (the reader residency rule, docs/ops.md).
    /// </summary>
    public int PrefillChunk { get; init; } = 256;

    /// <summary>Fill fresh CPU caches with NaN (debugging: a read of an unwritten slot poisons the logits).</summary>
    public bool PoisonCaches { get; init; }

    /// <summary>
    /// Most bytes the session's KV caches may take; creating a session that needs more fails before allocating and says
    /// how many bytes it would need. Null: the memory available now on CPU, the device's free memory (at most <see cref="KvCacheSet.DefaultDeviceLimitBytes"/>) on GPU.
    /// </summary>
    public long? MaxCacheBytes { get; init; }

    /// <summary>
    /// Blocks of each paged global cache (models converted with <c>--paged</c>; docs/runtime.md): sequences take blocks by
    /// their actual length from this pool. Null: enough for MaxBatch sequences of MaxLength (the memory of contiguous
    /// caches). Ignored for models without paged caches.
    /// </summary>
    public int? KvBlocks { get; init; }

    internal void Validate()
    {
        if (MaxBatch < 1) throw new MixAttentionException($"SessionConfig.MaxBatch must be >= 1 (batch slots), got {MaxBatch}.");
        if (MaxLength < 1) throw new MixAttentionException($"SessionConfig.MaxLength must be >= 1 (tokens per sequence), got {MaxLength}.");
        if (PrefillChunk < 1) throw new MixAttentionException($"SessionConfig.PrefillChunk must be >= 1 (tokens per prefill call), got {PrefillChunk}.");
        if (KvBlocks is < 1) throw new MixAttentionException($"SessionConfig.KvBlocks must be >= 1 or null, got {KvBlocks}.");
        if (MaxCacheBytes is < 1) throw new MixAttentionException($"SessionConfig.MaxCacheBytes must be >= 1 or null, got {MaxCacheBytes}.");
    }
}
