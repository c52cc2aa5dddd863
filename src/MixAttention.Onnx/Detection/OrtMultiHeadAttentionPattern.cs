using static MixAttention.Onnx.Detection.DetectionContext;

namespace MixAttention.Onnx.Detection;

/// <summary>ORT transformers optimizer: <c>com.microsoft.MultiHeadAttention</c> (Q/K/V projected, BSHD, separate past key/value).</summary>
internal sealed class OrtMultiHeadAttentionPattern : IAttentionPattern
{
    /// <inheritdoc/>
    public ExportStyle Style => ExportStyle.OrtMultiHeadAttention;

    /// <inheritdoc/>
    public IEnumerable<SiteMatch> Match(DetectionContext ctx)
    {
        foreach (var node in ctx.Graph.Nodes.Where(n => n.OpType == "MultiHeadAttention" && n.Domain == "com.microsoft"))
        {
            int heads = (int)AttrInt(node, "num_heads", 0);
            string q = Input(node, 0), k = Input(node, 1), v = Input(node, 2), pastK = Input(node, 6), pastV = Input(node, 7);
            if (Input(node, 3).Length > 0)
            {
                ctx.Report(node, "has a separate 'bias' input; fold it into the projections first (not supported yet).");
                continue;
            }
            long? headSize = ctx.LastDim(pastK) ?? (ctx.LastDim(q) is { } w && heads > 0 ? w / heads : null);
            if (heads <= 0 || headSize is null || k.Length == 0)
            {
                ctx.Report(node, $"needs num_heads, separate key/value inputs and a known head size (num_heads={heads}, key '{k}').");
                continue;
            }
            var kvWidth = ctx.LastDim(k);
            int kvHeads = kvWidth is { } kw ? (int)(kw / headSize.Value) : heads;
            yield return new SiteMatch(node, FusedSites.Site(Style, node, new[] { node.Name }, q, HeadLayout.BSHD, heads, kvHeads, headSize.Value,
                FusedSites.CacheOf(ctx, node, pastK, pastV, Output(node, 1), Output(node, 2)), FusedSites.ElementTypeOf(ctx, pastK, q), RotaryInfo.Before) with
            {
                Key = k,
                Value = v,
            });
        }
    }
}
