using MixAttention.Onnx.Graph;
using MixAttention.Onnx.Onnx.Proto;

namespace MixAttention.Onnx.Detection;

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

    /// <summary>Records a problem that stops conversion (see <see cref="DetectionIssue.Blocking"/>).</summary>
    public void Block(string where, string message) => _issues.Add(new DetectionIssue(where, message, Blocking: true));

    /// <summary>
    /// Walks back from <paramref name="value"/> to a graph input through Identity, Cast, one-input Concat and a Slice
    /// on the sequence axis (the optimum wrapper fills a transformers 5 sliding cache with <c>update()</c>, which keeps
    /// the last W - 1 tokens of the past), or returns null.
    /// </summary>
    public string? TraceToGraphInput(string value)
    {
        for (int i = 0; i < 8 && value.Length > 0; i++)
        {
            if (Graph.IsGraphInput(value)) return value;
            var p = Graph.Producer(value);
            if (p is null || !(p.OpType is "Identity" or "Cast" || (p.OpType == "Concat" && p.Input.Count == 1) || SequenceSliceKeep(p) is not null))
                return null;
            value = p.Input[0];
        }
        return null;
    }

    /// <summary>The graph output that carries <paramref name="value"/> (itself or through Identity/Cast), or null.</summary>
    public string? TraceToGraphOutput(string value) => TraceToGraphOutput(value, out _);

    /// <summary>
    /// The graph output that carries <paramref name="value"/>, itself or through Identity, Cast and at most one Slice on
    /// the sequence axis; <paramref name="keep"/> is the number of tokens that Slice keeps (null without one).
    /// </summary>
    public string? TraceToGraphOutput(string value, out long? keep) => TraceToGraphOutput(value, 0, sliced: false, out keep);

    private string? TraceToGraphOutput(string value, int depth, bool sliced, out long? keep)
    {
        keep = null;
        if (Graph.IsGraphOutput(value)) return value;
        if (depth >= 8) return null;
        foreach (var c in Graph.Consumers(value))
        {
            long? here = null;
            if (c.OpType is "Identity" or "Cast") { }
            else if (!sliced && c.Input[0] == value && SequenceSliceKeep(c) is { } k) here = k;
            else continue;
            var found = TraceToGraphOutput(c.Output[0], depth + 1, sliced || here is not null, out var deeper);
            if (found is null) continue;
            keep = here ?? deeper;
            return found;
        }
        return null;
    }

    /// <summary>
    /// For a Slice over the sequence axis (axis 2 or -2 of a [B, H, T, D] cache) that keeps the last tokens, how many it
    /// keeps: <c>long.MaxValue</c> when the start is not a negative constant (e.g. all of them), else -start. Null when
    /// the node is not such a Slice.
    /// </summary>
    public long? SequenceSliceKeep(NodeProto node)
    {
        if (node.OpType != "Slice" || node.Input.Count < 4) return null;
        var axes = Folder.TryEvaluate(node.Input[3]);
        if (axes is not { Data.Length: 1 } || axes.Data[0] is not (2 or -2)) return null;
        if (node.Input.Count > 4 && node.Input[4].Length > 0 && Folder.TryScalar(node.Input[4]) is not 1.0) return null;
        var starts = Folder.TryEvaluate(node.Input[1]);
        var ends = Folder.TryEvaluate(node.Input[2]);
        if (starts is { Data.Length: 1 } && ends is { Data.Length: 1 } && starts.Data[0] < 0 && ends.Data[0] >= 1L << 30)
            return (long)-starts.Data[0];
        return long.MaxValue;
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
                {
                    var present = TraceToGraphOutput(p.Output[0], out var keep);
                    return new KvOrigin(p.Input[1], past, present, p, keep is long.MaxValue ? null : keep);
                }
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
