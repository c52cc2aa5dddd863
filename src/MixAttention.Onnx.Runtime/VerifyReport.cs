namespace MixAttention.Onnx.Runtime;

/// <summary>The result of <see cref="ModelComparison.Verify"/>.</summary>
public sealed record VerifyReport(IReadOnlyList<StepComparison> Steps, SessionKvMemory Original, SessionKvMemory Converted, int Window, float Tolerance)
{
    /// <summary>Largest |Δlogit| anywhere.</summary>
    public float MaxAbsDiff => Steps.Max(s => s.MaxAbsDiff);
    /// <summary>Largest KL divergence anywhere.</summary>
    public double MaxKl => Steps.Max(s => s.KlDivergence);
    /// <summary>Mean top-1 agreement.</summary>
    public double Top1Agreement => Steps.Average(s => s.Top1Agreement);
    /// <summary>Every step within the tolerance and every argmax agrees.</summary>
    public bool Exact => MaxAbsDiff <= Tolerance && Steps.All(s => s.Top1Agreement == 1);
}
