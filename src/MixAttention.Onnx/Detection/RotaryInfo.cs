namespace MixAttention.Onnx.Detection;

/// <summary>Rotary embedding facts a backend must preserve.</summary>
/// <param name="Kind">Where rotation happens.</param>
/// <param name="CosCache">Initializer or value holding the cos cache [max_pos, rotary_dim/2] (fused only).</param>
/// <param name="SinCache">Initializer or value holding the sin cache (fused only).</param>
/// <param name="Interleaved">GQA <c>rotary_interleaved</c>.</param>
public sealed record RotaryInfo(RotaryKind Kind, string? CosCache = null, string? SinCache = null, bool Interleaved = false)
{
    /// <summary>No rotary embedding.</summary>
    public static readonly RotaryInfo None = new(RotaryKind.None);
    /// <summary>Rotary applied by ordinary nodes upstream of the site.</summary>
    public static readonly RotaryInfo Before = new(RotaryKind.AppliedBefore);
}
