using static MixAttention.Onnx.Graph.GraphBuilder;

namespace MixAttention.Onnx.Lowering;

/// <summary>What lowering one site produced: the new attention output and, for owners, the new present caches (temporary names).</summary>
internal sealed record LoweredSite(string Output, string? PresentKey, string? PresentValue);
