using static MixAttention.Onnx.Detection.DetectionContext;

namespace MixAttention.Onnx.Detection;

/// <summary>ORT transformers optimizer: <c>com.microsoft.Attention</c> (QKV projection inside the op, packed past [2,B,H,P,D]).</summary>
internal sealed class OrtAttentionPattern : IAttentionPattern
{
    /// <inheritdoc/>
    public ExportStyle Style => ExportStyle.OrtAttention;

    /// <inheritdoc/>
    public IEnumerable<SiteMatch> Match(DetectionContext ctx)
    {
        foreach (var node in ctx.Graph.Nodes.Where(n => n.OpType == "Attention" && n.Domain == "com.microsoft"))
        {
            int heads = (int)AttrInt(node, "num_heads", 0);
            string input = Input(node, 0), weight = Input(node, 1), bias = Input(node, 2), past = Input(node, 4);
            var w = ctx.Graph.DeclaredShape(weight);
            var sizes = node.Attribute.FirstOrDefault(a => a.Name == "qkv_hidden_sizes")?.Ints.ToArray();
            if (heads <= 0 || w is not { Length: 2 } || w[1] <= 0)
            {
                ctx.Report(node, $"needs num_heads and a 2-D QKV weight with a static shape; got num_heads={heads}, weight '{weight}' [{string.Join(",", w ?? Array.Empty<long>())}].");
                continue;
            }
            if (sizes is { Length: 3 } && (sizes[0] != sizes[1] || sizes[1] != sizes[2]))
            {
                ctx.Report(node, $"qkv_hidden_sizes [{string.Join(",", sizes)}] differ; only equal Q/K/V widths are supported.");
                continue;
            }
            long headSize = w[1] / 3 / heads;
            CacheTensors? cache = null;
            if (past.Length > 0)
            {
                var inP = ctx.TraceToGraphInput(past);
                var outP = ctx.TraceToGraphOutput(Output(node, 1));
                if (inP is null || outP is null)
                    ctx.Report(node, $"its packed past '{past}' / present '{Output(node, 1)}' are not graph inputs/outputs.");
                else
                    cache = new CacheTensors(inP, null, outP, null);
            }
            if (AttrInt(node, "unidirectional", 0) == 0 && cache is not null)
                ctx.Report(node, "is not unidirectional (causal); treating it as a decoder layer anyway because it carries a KV cache.");
            yield return new SiteMatch(node, FusedSites.Site(Style, node, new[] { node.Name }, input, HeadLayout.PackedQkv, heads, heads, headSize,
                cache, FusedSites.ElementTypeOf(ctx, past, weight, input), RotaryInfo.None) with
            {
                QkvWeight = weight,
                QkvBias = bias.Length > 0 ? bias : null,
            });
        }
    }
}
