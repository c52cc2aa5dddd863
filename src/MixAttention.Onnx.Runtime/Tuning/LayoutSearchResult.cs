namespace MixAttention.Onnx.Runtime.Tuning;

/// <summary>What <see cref="LayoutSearch.Run"/> found.</summary>
/// <param name="Chosen">The finalist with the least mean KL within the budget.</param>
/// <param name="MeetsMaxKl">False when the chosen layout's mean KL exceeds <see cref="LayoutSearchOptions.MaxKl"/>.</param>
/// <param name="Pareto">Every layout run end to end that no other beats in both KV bytes and mean KL, by KV bytes.</param>
/// <param name="Evaluated">Every layout run end to end (the model's own, the probes, the finalists).</param>
/// <param name="BudgetBytes">The budget in KV bytes per sequence at the context.</param>
/// <param name="UnconvertedBytes">The unconverted model's KV bytes per sequence at the context (every layer a full cache).</param>
/// <param name="Context">Tokens per sequence the candidates ran over.</param>
/// <param name="Elapsed">Wall time of the search.</param>
public sealed record LayoutSearchResult(LayoutCandidate Chosen, bool MeetsMaxKl, IReadOnlyList<LayoutCandidate> Pareto, IReadOnlyList<LayoutCandidate> Evaluated,
    long BudgetBytes, long UnconvertedBytes, int Context, TimeSpan Elapsed);
