using System.Globalization;

namespace MixAttention.Onnx.Conversion;

/// <summary>
/// Where the scales of quantized caches come from (<c>--kv-scale</c>): <c>calibrate</c> (absmax of K and V seen while the
/// source model reads calibration tokens, per owner cache), <c>absmax:X</c> (assume |K|, |V| ≤ X everywhere: scale = X / qmax)
/// or <c>fixed:S</c> (scale = S everywhere).
/// </summary>
internal sealed record KvScaleRule(KvScaleRule.Kinds Kind, float Value)
{
    /// <summary>The three rules.</summary>
    public enum Kinds
    {
        /// <summary>From a calibration run.</summary>
        Calibrate,
        /// <summary>A fixed bound on |x|.</summary>
        AbsMax,
        /// <summary>A fixed scale.</summary>
        Fixed,
    }

    /// <summary>Parses <c>calibrate</c>, <c>absmax:X</c>, <c>fixed:S</c> (X, S finite and &gt; 0).</summary>
    public static KvScaleRule Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text == "calibrate") return new(Kinds.Calibrate, 0);
        var parts = text.Split(':', 2);
        var kind = parts[0] switch { "absmax" => Kinds.AbsMax, "fixed" => Kinds.Fixed, _ => (Kinds?)null };
        if (kind is null || parts.Length != 2)
            throw new MixAttentionException($"--kv-scale '{text}' is not a scale rule; use calibrate, absmax:X (|K|, |V| ≤ X) or fixed:S (every scale S).");
        if (!float.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || !float.IsFinite(value) || value <= 0)
            throw new MixAttentionException($"--kv-scale '{text}': '{parts[1]}' must be a finite number > 0.");
        return new(kind.Value, value);
    }

    /// <inheritdoc/>
    public override string ToString() => Kind switch
    {
        Kinds.Calibrate => "calibrate",
        Kinds.AbsMax => $"absmax:{Value.ToString("R", CultureInfo.InvariantCulture)}",
        _ => $"fixed:{Value.ToString("R", CultureInfo.InvariantCulture)}",
    };
}
