namespace MixAttention.Onnx.Runtime.Tuning;

/// <summary>What <see cref="Evaluation.Run"/> measured: the source first, then each converted model.</summary>
/// <param name="Context">Tokens per sequence.</param>
/// <param name="Sequences">Sequences the text was cut into.</param>
/// <param name="Positions">Next-token predictions scored per model.</param>
/// <param name="Models">The source (KL 0) and each converted model, in the order given.</param>
public sealed record EvaluationReport(int Context, int Sequences, int Positions, IReadOnlyList<ModelEvaluation> Models);
