using MixAttention.Onnx.Layouts;

namespace MixAttention.Onnx.Runtime.Tuning;

/// <summary>A layout the search ran end to end.</summary>
/// <param name="Layout">The layout.</param>
/// <param name="KvBytesPerSequence">Its KV bytes per sequence at the context (as <c>convert</c> counts them).</param>
/// <param name="EstimatedKl">The sum of its layers' measured sensitivities (what the search ranked it by); 0 for the model's own layout.</param>
/// <param name="Quality">What running it over the text measured.</param>
/// <param name="Role">"native" (the model's own layout, the reference), "probe" (one layer changed, a sensitivity measurement) or "finalist".</param>
public sealed record LayoutCandidate(MixAttentionLayout Layout, long KvBytesPerSequence, double EstimatedKl, ModelEvaluation Quality, string Role);
