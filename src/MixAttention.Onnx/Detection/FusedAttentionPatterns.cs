using MixAttention.Onnx.Onnx.Proto;
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

/// <summary>What the fused-op patterns share: the site fields every fused op has, and cache / type lookups.</summary>
internal static class FusedSites
{
    /// <summary>
    /// A site of one fused op: its heads, head size, scale attribute (0 or absent = 1/sqrt(D)), softcap attribute,
    /// first output and cache; callers add the style's own fields (key/value inputs, weights, window) with <c>with</c>.
    /// </summary>
    public static AttentionSite Site(ExportStyle style, NodeProto node, IReadOnlyList<string> nodes, string query, HeadLayout layout,
        int heads, int kvHeads, long headSize, CacheTensors? cache, int elementType, RotaryInfo rotary)
    {
        float scale = AttrFloat(node, "scale", 0f);
        return new AttentionSite
        {
            Layer = -1,
            Style = style,
            Nodes = nodes,
            Query = query,
            QkvLayout = layout,
            Output = Output(node, 0),
            Cache = cache,
            NumHeads = heads,
            KvNumHeads = kvHeads,
            HeadSize = (int)headSize,
            Scale = scale != 0 ? scale : 1f / MathF.Sqrt(headSize),
            Softcap = AttrFloat(node, "softcap", 0f),
            Rotary = rotary,
            ElementType = elementType,
        };
    }

    /// <summary>The op's past/present traced to graph inputs/outputs, or null (reported) when they are not.</summary>
    public static CacheTensors? CacheOf(DetectionContext ctx, NodeProto node, string pastK, string pastV, string presentK, string presentV)
    {
        if (pastK.Length == 0 && presentK.Length == 0) return null;
        var inK = pastK.Length > 0 ? ctx.TraceToGraphInput(pastK) : null;
        var inV = pastV.Length > 0 ? ctx.TraceToGraphInput(pastV) : null;
        var outK = presentK.Length > 0 ? ctx.TraceToGraphOutput(presentK) : null;
        var outV = presentV.Length > 0 ? ctx.TraceToGraphOutput(presentV) : null;
        if (inK is null || outK is null || (pastV.Length > 0 && (inV is null || outV is null)))
        {
            ctx.Report(node, $"its KV cache is not carried by graph inputs/outputs (past '{pastK}', present '{presentK}').");
            return null;
        }
        return new CacheTensors(inK, inV, outK, outV);
    }

    /// <summary>The declared element type of the first of <paramref name="values"/> that has one (float otherwise).</summary>
    public static int ElementTypeOf(DetectionContext ctx, params string[] values)
    {
        foreach (var v in values)
            if (v.Length > 0 && ctx.Graph.DeclaredElementType(v) is > 0 and var t) return t;
        return (int)TensorProto.Types.DataType.Float;
    }
}

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
