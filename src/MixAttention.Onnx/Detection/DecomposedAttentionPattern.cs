using MixAttention.Onnx.Graph;
using MixAttention.Onnx.Onnx.Proto;
using static MixAttention.Onnx.Detection.DetectionContext;

namespace MixAttention.Onnx.Detection;

/// <summary>
/// TorchScript / optimum exports: <c>MatMul(Q, Kᵀ) → (Mul|Div scale) → (softcap) → (Add|Where mask) → Softmax → MatMul(·, V)</c>,
/// with K/V = repeat_kv(Concat(past, new, axis=-2)). Anchored on Softmax; node names are not needed.
/// </summary>
internal sealed class DecomposedAttentionPattern : IAttentionPattern
{
    /// <inheritdoc/>
    public ExportStyle Style => ExportStyle.Decomposed;

    /// <summary>What walking up from the Softmax to the score MatMul found.</summary>
    private sealed record ScoreChain(NodeProto MatMul, double Scale, float Softcap, List<NodeProto> Nodes);

    /// <inheritdoc/>
    public IEnumerable<SiteMatch> Match(DetectionContext ctx)
    {
        foreach (var softmax in ctx.Graph.Nodes.Where(n => n.OpType == "Softmax" && n.Domain is "" or "ai.onnx"))
        {
            var site = TryMatch(ctx, softmax, out var why);
            if (site is null)
            {
                if (why is not null) ctx.Report(softmax, why);
                continue;
            }
            yield return new SiteMatch(softmax, site);
        }
    }

    private static AttentionSite? TryMatch(DetectionContext ctx, NodeProto softmax, out string? why)
    {
        why = null;
        long axis = AttrInt(softmax, "axis", -1);
        if (axis != -1 && axis != 3)
        {
            why = $"Softmax over axis {axis} is not attention over keys (expected the last axis).";
            return null;
        }
        var chain = TraceScores(ctx, softmax.Input[0], 1.0, 0f, new List<NodeProto>());
        if (chain is null)
        {
            why = Unsupported(ctx, softmax) ?? "this Softmax is not fed by a Q·Kᵀ MatMul through scale/mask/softcap nodes.";
            return null;
        }
        // Q and Kᵀ, each possibly scaled (sdpa's decomposition scales both by sqrt(scale)).
        double scale = chain.Scale;
        var q = StripScale(ctx, chain.MatMul.Input[0], ref scale, chain.Nodes);
        var kt = StripScale(ctx, chain.MatMul.Input[1], ref scale, chain.Nodes);
        var ktNode = ctx.Graph.Producer(kt);
        if (ktNode is null || ktNode.OpType != "Transpose" || !IsLastTwoSwap(ktNode))
        {
            why = $"the score MatMul '{ModelGraph.Describe(chain.MatMul)}' does not multiply by a transposed key (Transpose perm [0,1,3,2]).";
            return null;
        }
        chain.Nodes.Add(ktNode);
        var key = ctx.TraceKv(ktNode.Input[0]);

        // Softmax → (Cast/Dropout/Identity) → MatMul(probs, V) → Transpose(0,2,1,3) → Reshape [B,S,H·D].
        var probs = softmax.Output[0];
        var nodes = new List<NodeProto>(chain.Nodes) { softmax };
        NodeProto? pv = null;
        for (int i = 0; i < 6; i++)
        {
            var consumers = ctx.Graph.Consumers(probs);
            if (consumers.Count != 1) break;
            var c = consumers[0];
            if (c.OpType == "MatMul" && c.Input[0] == probs) { pv = c; break; }
            if (c.OpType is not ("Cast" or "Dropout" or "Identity")) break;
            nodes.Add(c);
            probs = c.Output[0];
        }
        if (pv is null)
        {
            why = "the Softmax output does not reach a MatMul with the values.";
            return null;
        }
        nodes.Add(pv);
        var value = ctx.TraceKv(pv.Input[1]);

        string output = pv.Output[0];
        var layout = HeadLayout.BNSH;
        // [B, H, S, D] → (a view to the same shape, as Falcon writes it) → Transpose(0,2,1,3) → Reshape [B, S, H·D].
        var merge = ctx.Graph.Consumers(output).Where(c => c.OpType != "Shape").ToList();
        NodeProto? view = null;
        if (merge is [{ OpType: "Reshape" } v0])
        {
            view = v0;
            merge = ctx.Graph.Consumers(v0.Output[0]).Where(c => c.OpType != "Shape").ToList();
        }
        if (merge is [{ OpType: "Transpose" } t] && IsHeadsToSeq(t)
            && ctx.Graph.Consumers(t.Output[0]).Where(c => c.OpType != "Shape").ToList() is [{ OpType: "Reshape" } r])
        {
            if (view is not null) nodes.Add(view);
            nodes.Add(t);
            nodes.Add(r);
            output = r.Output[0];
            layout = HeadLayout.BSHD;
        }

        // Shapes: the cache says kv heads and head size; the output projection says query heads.
        long? headSize = (key.PastInput is { } pk ? ctx.LastDim(pk) : null) ?? ctx.LastDim(key.NewValue) ?? ctx.LastDim(q);
        long? kvHeads = (key.PastInput is { } pk2 ? ctx.Dim(pk2, 1) : null) ?? ctx.Dim(key.NewValue, 1);
        long? heads = layout == HeadLayout.BSHD && headSize is { } d ? QueryWidth(ctx, output) / d : ctx.Dim(q, 1);
        if (headSize is null || kvHeads is null || heads is null or <= 0)
        {
            why = $"cannot tell head size / kv heads / heads (cache '{key.PastInput ?? key.NewValue}', output '{output}').";
            return null;
        }
        if (heads % kvHeads != 0)
        {
            why = $"{heads} query heads are not a multiple of {kvHeads} kv heads.";
            return null;
        }
        if (scale <= 0)
        {
            why = $"could not read a positive softmax scale (got {scale}).";
            return null;
        }

        CacheTensors? cache = null;
        if (key.PastInput is not null && value.PastInput is not null && key.PresentOutput is not null && value.PresentOutput is not null)
            cache = new CacheTensors(key.PastInput, value.PastInput, key.PresentOutput, value.PresentOutput) { PresentKeep = key.PresentKeep };
        else if (key.PastInput is not null || value.PastInput is not null)
            ctx.Report(softmax, "its key/value caches are not both carried by graph inputs/outputs; treated as a layer without cache.");
        if (key.Concat is not null) nodes.Add(key.Concat);
        if (value.Concat is not null) nodes.Add(value.Concat);

        return new AttentionSite
        {
            Layer = -1,
            Style = ExportStyle.Decomposed,
            Nodes = nodes.Select(n => ModelGraph.Describe(n)).ToArray(),
            Query = q,
            Key = key.NewValue,
            Value = value.NewValue,
            QkvLayout = HeadLayout.BNSH,
            Output = output,
            OutputLayout = layout,
            Cache = cache,
            NumHeads = (int)heads,
            KvNumHeads = (int)kvHeads,
            HeadSize = (int)headSize,
            Scale = (float)scale,
            Softcap = chain.Softcap,
            Rotary = RotaryInfo.Before,
            ElementType = FusedSites.ElementTypeOf(ctx, key.PastInput ?? "", value.PastInput ?? ""),
        };
    }

    /// <summary>
    /// Names the attention features this converter does not carry over, when the scores feeding <paramref name="softmax"/>
    /// use them: attention sinks (a learned logit per head concatenated to the scores, gpt-oss) and ALiBi (a position bias
    /// built from a cumulative sum of the attention mask, BLOOM). Null when neither is found.
    /// </summary>
    private static string? Unsupported(DetectionContext ctx, NodeProto softmax)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var frontier = new List<(string Value, int Depth)> { (softmax.Input[0], 0) };
        while (frontier.Count > 0)
        {
            var (value, depth) = frontier[^1];
            frontier.RemoveAt(frontier.Count - 1);
            if (depth > 24 || !seen.Add(value)) continue;
            var p = ctx.Graph.Producer(value);
            if (p is null) continue;
            if (p.OpType == "Concat" && depth <= 4 && AttrInt(p, "axis", 0) is -1 or 3)
                return "attention sinks (a learned logit per head concatenated to the scores before Softmax) are not supported.";
            if (p.OpType == "CumSum")
                return "ALiBi position bias (built from a cumulative sum of the attention mask) is not supported.";
            foreach (var input in p.Input)
                if (input.Length > 0) frontier.Add((input, depth + 1));
        }
        return null;
    }

    /// <summary>Walks from the Softmax input up to the score MatMul, collecting scale and softcap.</summary>
    private static ScoreChain? TraceScores(DetectionContext ctx, string v, double scale, float softcap, List<NodeProto> nodes)
    {
        for (int depth = 0; depth < 12; depth++)
        {
            var p = ctx.Graph.Producer(v);
            if (p is null) return null;
            switch (p.OpType)
            {
                case "MatMul":
                    nodes.Add(p);
                    return new ScoreChain(p, scale, softcap, nodes);
                case "Cast" or "Identity":
                    nodes.Add(p);
                    v = p.Input[0];
                    continue;
                case "Mul" or "Div":
                    {
                        // Softcap: Mul(Tanh(Div(x, c)), c) — the outer Mul's tanh input marks it.
                        int tanhSide = ctx.Graph.Producer(p.Input[0])?.OpType == "Tanh" ? 0 : ctx.Graph.Producer(p.Input[1])?.OpType == "Tanh" ? 1 : -1;
                        if (p.OpType == "Mul" && tanhSide >= 0 && ctx.Folder.TryScalar(p.Input[1 - tanhSide]) is { } cap)
                        {
                            var tanh = ctx.Graph.Producer(p.Input[tanhSide])!;
                            var inner = ctx.Graph.Producer(tanh.Input[0]);
                            if (inner is not null && inner.OpType is "Div" or "Mul" && ctx.Folder.TryScalar(inner.Input[1]) is { } c2)
                            {
                                var innerCap = inner.OpType == "Div" ? c2 : 1 / c2;
                                if (Math.Abs(innerCap - cap) > 1e-3 * Math.Abs(cap)) return null;
                                nodes.AddRange(new[] { p, tanh, inner });
                                softcap = (float)cap;
                                v = inner.Input[0];
                                continue;
                            }
                            return null;
                        }
                        var (data, constant) = SplitConstant(ctx, p);
                        if (data is null || constant is null) return null;
                        scale = p.OpType == "Mul" ? scale * constant.Value : scale / constant.Value;
                        nodes.Add(p);
                        v = data;
                        continue;
                    }
                case "Add":
                    {
                        // One side is the mask; follow the side that leads to a MatMul.
                        nodes.Add(p);
                        var left = TraceScores(ctx, p.Input[0], scale, softcap, new List<NodeProto>(nodes));
                        if (left is not null) return left;
                        return TraceScores(ctx, p.Input[1], scale, softcap, nodes);
                    }
                case "Where":
                    {
                        nodes.Add(p);
                        var a = TraceScores(ctx, p.Input[2], scale, softcap, new List<NodeProto>(nodes));
                        if (a is not null) return a;
                        return TraceScores(ctx, p.Input[1], scale, softcap, nodes);
                    }
                default:
                    return null;
            }
        }
        return null;
    }

    /// <summary>For a binary Mul/Div, the non-constant input and the scalar constant (null when neither side is a scalar constant).</summary>
    private static (string? Data, double? Constant) SplitConstant(DetectionContext ctx, NodeProto p)
    {
        if (ctx.Folder.TryScalar(p.Input[1]) is { } c1) return (p.Input[0], c1);
        if (p.OpType == "Mul" && ctx.Folder.TryScalar(p.Input[0]) is { } c0) return (p.Input[1], c0);
        return (null, null);
    }

    /// <summary>Skips a Mul/Div by a scalar constant in front of a MatMul operand, folding it into the scale.</summary>
    private static string StripScale(DetectionContext ctx, string v, ref double scale, List<NodeProto> nodes)
    {
        var p = ctx.Graph.Producer(v);
        if (p is not null && p.OpType is "Mul" or "Div" && SplitConstant(ctx, p) is ({ } data, { } c))
        {
            scale = p.OpType == "Mul" ? scale * c : scale / c;
            nodes.Add(p);
            return data;
        }
        return v;
    }

    private static bool IsLastTwoSwap(NodeProto transpose)
    {
        var perm = transpose.Attribute.FirstOrDefault(a => a.Name == "perm")?.Ints.ToArray();
        return perm is [0, 1, 3, 2];
    }

    private static bool IsHeadsToSeq(NodeProto transpose)
    {
        var perm = transpose.Attribute.FirstOrDefault(a => a.Name == "perm")?.Ints.ToArray();
        return perm is [0, 2, 1, 3];
    }

    /// <summary>Hq·D of the merged attention output: the rows of the output projection's weight.</summary>
    private static long QueryWidth(DetectionContext ctx, string output)
    {
        foreach (var c in ctx.Graph.Consumers(output))
        {
            string? weight = c.OpType switch { "MatMul" => c.Input[1], "Gemm" => c.Input[1], _ => null };
            if (c.OpType == "Reshape")
                foreach (var c2 in ctx.Graph.Consumers(c.Output[0]))
                    if (c2.OpType is "MatMul" or "Gemm") weight = c2.Input[1];
            if (weight is not null && ctx.Graph.DeclaredShape(weight) is [var rows, _] && rows > 0)
                return rows;
        }
        return ctx.LastDim(output) ?? -1;
    }
}
