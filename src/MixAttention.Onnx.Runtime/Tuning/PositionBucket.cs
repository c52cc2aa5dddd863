namespace MixAttention.Onnx.Runtime.Tuning;

/// <summary>Quality of a model over the positions <c>[Start, End)</c> of every sequence.</summary>
/// <param name="Start">First position (0-based, within a sequence).</param>
/// <param name="End">One past the last position.</param>
/// <param name="Count">Predictions in the bucket (over all sequences).</param>
/// <param name="Perplexity">exp(mean negative log-likelihood of the next token).</param>
/// <param name="MeanKl">Mean KL(source ‖ model) of the next-token distributions.</param>
/// <param name="MaxKl">Largest KL in the bucket.</param>
/// <param name="MaxLogitDelta">Largest |logit − source logit| in the bucket.</param>
/// <param name="Top1Agreement">Share of predictions whose argmax equals the source's.</param>
public sealed record PositionBucket(int Start, int End, int Count, double Perplexity, double MeanKl, double MaxKl, double MaxLogitDelta, double Top1Agreement);
