namespace MixAttention.Onnx.Detection;

/// <summary>How rotary position embeddings reach the attention of a layer.</summary>
public enum RotaryKind
{
    /// <summary>No rotary (absolute position embeddings, e.g. GPT-2).</summary>
    None,
    /// <summary>Rotary is applied by ordinary nodes before Q/K reach the site: nothing to do when lowering.</summary>
    AppliedBefore,
    /// <summary>The attention op rotates Q/K itself (GQA <c>do_rotary</c> with cos/sin caches).</summary>
    Fused,
}
