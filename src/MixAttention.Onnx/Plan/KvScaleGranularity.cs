namespace MixAttention.Onnx.Plan;

/// <summary>
/// How finely a quantized cache is scaled (docs/cache-plan.md, docs/ops.md): one float32 scale for the whole tensor
/// (shape [1]), one per KV head ([1, Hkv, 1, 1]) or one per KV head and channel ([1, Hkv, 1, D], ORT GroupQueryAttention's
/// PER_CHANNEL layout). The shapes broadcast against the cache [B, Hkv, C, D].
/// </summary>
public enum KvScaleGranularity
{
    /// <summary>One scale: shape [1].</summary>
    Tensor,
    /// <summary>One scale per KV head: shape [1, Hkv, 1, 1].</summary>
    Head,
    /// <summary>One scale per KV head and channel: shape [1, Hkv, 1, D].</summary>
    Channel,
}
