namespace MixAttention.Onnx.Runtime;

/// <summary>What the check after a conversion did and found.</summary>
/// <param name="Done">The check that ran (never <see cref="ConversionCheckMode.Auto"/>).</param>
/// <param name="Why">Why that check was chosen (for <see cref="ConversionCheckMode.Auto"/>) or why the comparison could not run.</param>
/// <param name="Tokens">Tokens the comparison decoded (0 without one).</param>
/// <param name="MaxAbsDiff">Largest logit difference from the source over those tokens; null without a comparison.</param>
/// <param name="Tolerance">The tolerance the comparison used.</param>
public sealed record ConversionCheckReport(ConversionCheckMode Done, string Why, int Tokens, float? MaxAbsDiff, float Tolerance)
{
    /// <summary>True when the converted model gave the source's logits on every token compared.</summary>
    public bool MatchesSource => MaxAbsDiff is { } d && d <= Tolerance;
}
