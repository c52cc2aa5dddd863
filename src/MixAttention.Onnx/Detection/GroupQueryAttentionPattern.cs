using static MixAttention.Onnx.Detection.DetectionContext;

namespace MixAttention.Onnx.Detection;

/// <summary>onnxruntime-genai builder: <c>com.microsoft.GroupQueryAttention</c>.</summary>
internal sealed class GroupQueryAttentionPattern : IAttentionPattern
{
    /// <inheritdoc/>
    public ExportStyle Style => ExportStyle.GroupQueryAttention;

    /// <inheritdoc/>
    public IEnumerable<SiteMatch> Match(DetectionContext ctx)
    {
        foreach (var node in ctx.Graph.Nodes.Where(n => n.OpType == "GroupQueryAttention" && n.Domain == "com.microsoft"))
        {
            int heads = (int)AttrInt(node, "num_heads", 0), kvHeads = (int)AttrInt(node, "kv_num_heads", 0);
            if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0)
            {
                ctx.Report(node, $"num_heads={heads} and kv_num_heads={kvHeads} are not a valid GQA grouping.");
                continue;
            }
            string q = Input(node, 0), k = Input(node, 1), v = Input(node, 2), pastK = Input(node, 3), pastV = Input(node, 4);
            bool packed = k.Length == 0;
            long? headSize = ctx.LastDim(pastK);
            var qWidth = ctx.LastDim(q);
            if (headSize is null && qWidth is { } w)
                headSize = packed ? w / (heads + 2 * kvHeads) : w / heads;
            if (headSize is null)
            {
                ctx.Report(node, $"cannot tell the head size: neither '{pastK}' nor '{q}' has a static last dimension.");
                continue;
            }
            var rotary = AttrInt(node, "do_rotary", 0) != 0
                ? new RotaryInfo(RotaryKind.Fused, Input(node, 7), Input(node, 8), AttrInt(node, "rotary_interleaved", 0) != 0)
                : RotaryInfo.Before;
            int window = (int)AttrInt(node, "local_window_size", -1);
            // KV sharing as other builders write it (Gemma-3n / Gemma-4): no keys/values of its own, and the past is
            // another GroupQueryAttention's present. The layer reads that layer's cache.
            if (k.Length == 0 && v.Length == 0 && ctx.Graph.Producer(pastK) is { OpType: "GroupQueryAttention" } owner
                && Output(owner, 1) == pastK && ctx.Graph.Producer(pastV) == owner && Output(owner, 2) == pastV)
            {
                if (ctx.LastDim(q) is { } qw && qw != heads * headSize)
                {
                    ctx.Report(node, $"reads the cache of '{owner.Name}' but its query is {qw} wide, not {heads}×{headSize}.");
                    continue;
                }
                yield return new SiteMatch(node, FusedSites.Site(Style, node, new[] { node.Name }, q, HeadLayout.BSHD,
                    heads, kvHeads, headSize.Value, cache: null, FusedSites.ElementTypeOf(ctx, pastK, q), rotary) with
                {
                    ReadsKvOfNode = owner.Name,
                    Window = window > 0 ? window : 0,
                    WindowSource = window > 0 ? WindowSource.Graph : WindowSource.None,
                });
                continue;
            }
            yield return new SiteMatch(node, FusedSites.Site(Style, node, new[] { node.Name }, q, packed ? HeadLayout.PackedQkv : HeadLayout.BSHD,
                heads, kvHeads, headSize.Value, FusedSites.CacheOf(ctx, node, pastK, pastV, Output(node, 1), Output(node, 2)),
                FusedSites.ElementTypeOf(ctx, pastK, q), rotary) with
            {
                Key = packed ? null : k,
                Value = packed ? null : v,
                Window = window > 0 ? window : 0,
                WindowSource = window > 0 ? WindowSource.Graph : WindowSource.None,
            });
        }
    }
}
