namespace MixAttention.Onnx.Runtime.Tuning;

/// <summary>Progress of an evaluation or a layout search: what runs now, and how many of the stage's steps are done.</summary>
/// <param name="Stage">What runs, e.g. "evaluating model.onnx" or "layer sensitivity".</param>
/// <param name="Done">Steps of the stage done.</param>
/// <param name="Total">Steps of the stage in all.</param>
public sealed record TuningProgress(string Stage, int Done, int Total);
