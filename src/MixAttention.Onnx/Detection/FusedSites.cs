using MixAttention.Onnx.Onnx.Proto;
using static MixAttention.Onnx.Detection.DetectionContext;

namespace MixAttention.Onnx.Detection;

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
