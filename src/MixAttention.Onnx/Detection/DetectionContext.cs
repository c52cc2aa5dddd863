using MixAttention.Onnx.Graph;
using MixAttention.Onnx.Onnx.Proto;

namespace MixAttention.Onnx.Detection;

/// <summary>Something attention-like that no pattern could turn into a site, with the node(s) and the reason.</summary>
/// <param name="Node">Name (or description) of the node where matching stopped.</param>
/// <param name="Message">Why it is not a site.</param>
public sealed record DetectionIssue(string Node, string Message);

/// <summary>A site found by one pattern, before layers are numbered. <paramref name="Anchor"/> orders sites in the graph.</summary>
internal sealed record SiteMatch(NodeProto Anchor, AttentionSite Site);

/// <summary>Where a key/value entering attention comes from.</summary>
/// <param name="NewValue">This step's K or V, [B, Hkv, S, D] (before repeat_kv).</param>
/// <param name="PastInput">Graph input holding the past, or null without cache.</param>
/// <param name="PresentOutput">Graph output carrying past ++ new, or null.</param>
/// <param name="Concat">The appending Concat node, or null.</param>
internal sealed record KvOrigin(string NewValue, string? PastInput, string? PresentOutput, NodeProto? Concat);

/// <summary>Shared state and small graph-walking helpers for the detection patterns.</summary>
internal sealed class DetectionContext
{
    private readonly List<DetectionIssue> _issues = new();

    /// <summary>Creates the context for one detection run.</summary>
    public DetectionContext(ModelGraph graph, ModelConfig config)
    {
        Graph = graph;
        Config = config;
        Folder = new ConstantFolder(graph);
    }

    /// <summary>The graph being searched.</summary>
    public ModelGraph Graph { get; }
    /// <summary>Side files of the model.</summary>
    public ModelConfig Config { get; }
    /// <summary>Constant evaluation over <see cref="Graph"/>.</summary>
    public ConstantFolder Folder { get; }
    /// <summary>Issues reported so far.</summary>
    public IReadOnlyList<DetectionIssue> Issues => _issues;

    /// <summary>Records that <paramref name="node"/> looks like attention but is not understood.</summary>
    public void Report(NodeProto node, string message) => _issues.Add(new DetectionIssue(ModelGraph.Describe(node), message));

    /// <summary>Walks back through Identity/Cast from <paramref name="value"/> to a graph input, or returns null.</summary>
    public string? TraceToGraphInput(string value)
    {
        for (int i = 0; i < 8 && value.Length > 0; i++)
        {
            if (Graph.IsGraphInput(value)) return value;
            var p = Graph.Producer(value);
            if (p is null || !(p.OpType is "Identity" or "Cast" || (p.OpType == "Concat" && p.Input.Count == 1))) return null;
            value = p.Input[0];
        }
        return null;
    }

    /// <summary>The graph output that carries <paramref name="value"/> (itself or through Identity/Cast), or null.</summary>
    public string? TraceToGraphOutput(string value)
    {
        for (int i = 0; i < 8; i++)
        {
            if (Graph.IsGraphOutput(value)) return value;
            var next = Graph.Consumers(value).FirstOrDefault(n => n.OpType is "Identity" or "Cast" && TraceToGraphOutput(n.Output[0]) is not null);
            if (next is null) return null;
            value = next.Output[0];
        }
        return null;
    }

    /// <summary>
    /// Follows a key or value entering an attention core back through repeat_kv plumbing (Reshape, Expand,
    /// Unsqueeze, Tile, Identity, Cast) to the <c>Concat(past, new, axis=-2)</c> that appends this step's
    /// K/V to the cache. Without such a Concat the value itself is this step's K/V and there is no cache.
    /// </summary>
    public KvOrigin TraceKv(string value)
    {
        var v = value;
        for (int i = 0; i < 16; i++)
        {
            var p = Graph.Producer(v);
            if (p is null) break;
            if (p.OpType == "Concat" && p.Input.Count == 2)
            {
                long axis = AttrInt(p, "axis", 0);
                var past = TraceToGraphInput(p.Input[0]);
                if ((axis == -2 || axis == 2) && past is not null)
                    return new KvOrigin(p.Input[1], past, TraceToGraphOutput(p.Output[0]), p);
                break;
            }
            if (p.OpType is not ("Reshape" or "Expand" or "Unsqueeze" or "Tile" or "Identity" or "Cast" or "Squeeze")) break;
            v = p.Input[0];
        }
        return new KvOrigin(v, null, null, null);
    }

    /// <summary>Integer attribute of a node, or the default.</summary>
    public static long AttrInt(NodeProto node, string name, long fallback) =>
        node.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.I : fallback;

    /// <summary>Float attribute of a node, or the default.</summary>
    public static float AttrFloat(NodeProto node, string name, float fallback) =>
        node.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.F : fallback;

    /// <summary>True when the node has the attribute.</summary>
    public static bool HasAttr(NodeProto node, string name) => node.Attribute.Any(a => a.Name == name);

    /// <summary>Input <paramref name="i"/> of a node, or "" when absent.</summary>
    public static string Input(NodeProto node, int i) => i < node.Input.Count ? node.Input[i] : "";

    /// <summary>Output <paramref name="i"/> of a node, or "" when absent.</summary>
    public static string Output(NodeProto node, int i) => i < node.Output.Count ? node.Output[i] : "";

    /// <summary>Last axis of a value's declared shape, or null.</summary>
    public long? LastDim(string value) => Graph.DeclaredShape(value) is { Length: > 0 } s && s[^1] > 0 ? s[^1] : null;

    /// <summary>Dimension <paramref name="axis"/> of a value's declared shape when it is a number.</summary>
    public long? Dim(string value, int axis) => Graph.DeclaredShape(value) is { } s && axis < s.Length && s[axis] > 0 ? s[axis] : null;
}
