using MixAttention.Onnx.Onnx.Proto;

namespace MixAttention.Onnx.Detection;

/// <summary>A site found by one pattern, before layers are numbered. <paramref name="Anchor"/> orders sites in the graph.</summary>
internal sealed record SiteMatch(NodeProto Anchor, AttentionSite Site);
