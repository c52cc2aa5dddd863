using static MixAttention.Onnx.Detection.DetectionContext;

namespace MixAttention.Onnx.Detection;

/// <summary>torch.onnx dynamo: the standard ONNX <c>Attention</c> op (opset 23/24).</summary>
internal sealed class OnnxAttentionPattern : IAttentionPattern
{
    /// <inheritdoc/>
    public ExportStyle Style => ExportStyle.OnnxAttention;

    /// <inheritdoc/>
    public IEnumerable<SiteMatch> Match(DetectionContext ctx)
    {
        foreach (var node in ctx.Graph.Nodes.Where(n => n.OpType == "Attention" && n.Domain is "" or "ai.onnx"))
        {
            string q = Input(node, 0), k = Input(node, 1), v = Input(node, 2), pastK = Input(node, 4), pastV = Input(node, 5);
            // dynamo exports append to the cache outside the op: Concat(past, new) → repeat_kv → Attention.
            KvOrigin? keyOrigin = null, valueOrigin = null;
            if (pastK.Length == 0)
            {
                keyOrigin = ctx.TraceKv(k);
                valueOrigin = ctx.TraceKv(v);
            }
            var qShape = ctx.Graph.DeclaredShape(q);
            var kShape = ctx.Graph.DeclaredShape(k);
            int heads = (int)AttrInt(node, "q_num_heads", 0), kvHeads = (int)AttrInt(node, "kv_num_heads", 0);
            long? headSize = ctx.LastDim(pastK);
            if (keyOrigin?.PastInput is { } tracedPast)
            {
                headSize ??= ctx.LastDim(tracedPast);
                if (ctx.Dim(tracedPast, 1) is { } h) kvHeads = (int)h;
            }
            HeadLayout layout;
            if (qShape is { Length: 4 } || (qShape is null && heads == 0))
            {
                layout = HeadLayout.BNSH;
                headSize ??= qShape is { Length: 4 } && qShape[3] > 0 ? qShape[3] : null;
                if (qShape is { Length: 4 } && qShape[1] > 0) heads = (int)qShape[1];
                if (keyOrigin?.PastInput is null)
                {
                    if (kShape is { Length: 4 } && kShape[1] > 0) kvHeads = (int)kShape[1];
                    else if (ctx.Dim(pastK, 1) is { } h) kvHeads = (int)h;
                }
            }
            else
            {
                layout = HeadLayout.BSHD;
                if (headSize is null && qShape is { Length: 3 } && qShape[2] > 0 && heads > 0) headSize = qShape[2] / heads;
            }
            if (heads <= 0 || kvHeads <= 0 || headSize is null)
            {
                ctx.Report(node, $"cannot tell heads / kv heads / head size (q '{q}' shape [{string.Join(",", qShape ?? Array.Empty<long>())}], q_num_heads={heads}, kv_num_heads={kvHeads}).");
                continue;
            }
            if (AttrInt(node, "is_causal", 0) == 0 && Input(node, 3).Length == 0)
                ctx.Report(node, "has neither is_causal nor an attention mask: not a decoder self-attention, skipped.");
            CacheTensors? cache;
            var nodes = new List<string> { node.Name };
            if (keyOrigin is not null && valueOrigin is not null)
            {
                cache = keyOrigin.PastInput is { } pk && valueOrigin.PastInput is { } pv && keyOrigin.PresentOutput is { } ok && valueOrigin.PresentOutput is { } ov
                    ? new CacheTensors(pk, pv, ok, ov) { PresentKeep = keyOrigin.PresentKeep } : null;
                k = keyOrigin.NewValue;
                v = valueOrigin.NewValue;
                if (keyOrigin.Concat is { } kc) nodes.Add(Graph.ModelGraph.Describe(kc));
                if (valueOrigin.Concat is { } vc) nodes.Add(Graph.ModelGraph.Describe(vc));
            }
            else
                cache = FusedSites.CacheOf(ctx, node, pastK, pastV, Output(node, 1), Output(node, 2));
            yield return new SiteMatch(node, FusedSites.Site(Style, node, nodes, q, layout, heads, kvHeads, headSize.Value, cache,
                FusedSites.ElementTypeOf(ctx, pastK, q), RotaryInfo.Before) with
            {
                Key = k,
                Value = v,
                OutputLayout = layout,
            });
        }
    }
}
