namespace MixAttention.Onnx.Layouts;

/// <summary>How the global layers of a <see cref="MixPattern"/> share caches.</summary>
public enum GlobalSharing
{
    /// <summary>Every global layer owns its cache.</summary>
    None,
    /// <summary>Every global layer reads the first global layer's cache (Character.AI / LLM Foundry).</summary>
    All,
    /// <summary>Global layers share in pairs: the 2nd reads the 1st, the 4th reads the 3rd, … (MixAttention Pairs).</summary>
    Pairs,
}
