namespace MixAttention.Onnx.Runtime;

/// <summary>One position's comparison (the prompt's last token is step 0).</summary>
/// <param name="Step">0 = after prefill, then one per decode step.</param>
/// <param name="Position">Absolute position of the token whose logits are compared.</param>
/// <param name="MaxAbsDiff">Largest |Δlogit| over the batch.</param>
/// <param name="KlDivergence">Largest KL(original ‖ converted) over the batch, in nats.</param>
/// <param name="Top1Agreement">Fraction of sequences whose argmax agrees.</param>
public sealed record StepComparison(int Step, int Position, float MaxAbsDiff, double KlDivergence, double Top1Agreement);
