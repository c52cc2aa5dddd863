namespace MixAttention.Onnx.Runtime.Tuning;

/// <summary>One model's quality on the text, against the source.</summary>
/// <param name="Model">Path (or in-memory label) of the model.</param>
/// <param name="Layout">Its layout as a compact string with windows (null for an unconverted model).</param>
/// <param name="Perplexity">exp(mean negative log-likelihood of the next token) over every position.</param>
/// <param name="MeanKl">Mean KL(source ‖ model) over every position (0 for the source itself).</param>
/// <param name="MaxKl">Largest KL at any position.</param>
/// <param name="MaxLogitDelta">Largest |logit − source logit| over every position and vocabulary entry (raw logits, not
/// log-probabilities: a constant shift counts; 0 for the source itself).</param>
/// <param name="Top1Agreement">Share of positions whose argmax equals the source's.</param>
/// <param name="KvBytesPerSequence">KV cache bytes one sequence of the context costs in the runtime.</param>
/// <param name="Buckets">The same by position.</param>
public sealed record ModelEvaluation(string Model, string? Layout, double Perplexity, double MeanKl, double MaxKl, double MaxLogitDelta,
    double Top1Agreement, long KvBytesPerSequence, IReadOnlyList<PositionBucket> Buckets);
