namespace MixAttention.Onnx.Layouts;

/// <summary>A layout could not be parsed, built or validated. The message names the layer (or token) and the rule.</summary>
public sealed class LayoutException : MixAttentionException
{
    /// <summary>Creates the exception.</summary>
    public LayoutException(LayoutRule rule, string message, int? layer = null, Exception? inner = null)
        : base(message, inner)
    {
        Rule = rule;
        Layer = layer;
    }

    /// <summary>The rule that was broken.</summary>
    public LayoutRule Rule { get; }

    /// <summary>The 0-based layer (or compact-string token position) the error is about, when there is one.</summary>
    public int? Layer { get; }
}
