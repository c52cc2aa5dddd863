using MixAttention.Onnx.Graph;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Lowering;

/// <summary>What lowering changed, for reports.</summary>
internal sealed record LoweringResult(CachePlan Plan, DeadCodeReport Removed);
