using MixAttention.Onnx.Graph;
using MixAttention.Onnx.Onnx;

namespace MixAttention.Onnx.Detection;

/// <summary>Every attention site of a model, in layer order, and what looked like attention but was not understood.</summary>
public sealed record DetectionReport(IReadOnlyList<AttentionSite> Sites, IReadOnlyList<DetectionIssue> Issues)
{
    /// <summary>The export styles present (usually one).</summary>
    public IReadOnlyList<ExportStyle> Styles => Sites.Select(s => s.Style).Distinct().ToArray();
}

/// <summary>
/// Finds every layer's attention with one pattern per export style, numbers the layers in graph order,
/// and fills in windows the graph does not state from the side files (config.json, genai_config.json).
/// </summary>
internal static class AttentionDetector
{
    /// <summary>The patterns tried, fused ops first (they are unambiguous).</summary>
    public static IReadOnlyList<IAttentionPattern> Patterns { get; } = new IAttentionPattern[]
    {
        new GroupQueryAttentionPattern(),
        new OrtAttentionPattern(),
        new OrtMultiHeadAttentionPattern(),
        new OnnxAttentionPattern(),
        new DecomposedAttentionPattern(),
    };

    /// <summary>Loads nothing: detects on an already loaded model, reading side files beside <see cref="OnnxModel.SourcePath"/>.</summary>
    public static DetectionReport Detect(OnnxModel model, ModelConfig? config = null) =>
        Detect(new ModelGraph(model), config ?? ModelConfig.ForModel(model.SourcePath));

    /// <summary>Detects on a graph.</summary>
    public static DetectionReport Detect(ModelGraph graph, ModelConfig config)
    {
        var ctx = new DetectionContext(graph, config);
        var order = new Dictionary<Onnx.Proto.NodeProto, int>(ReferenceEqualityComparer.Instance);
        foreach (var node in graph.TopologicalOrder())
            order[node] = order.Count;
        var matches = new List<SiteMatch>();
        foreach (var pattern in Patterns)
            matches.AddRange(pattern.Match(ctx));
        matches.Sort((a, b) => order[a.Anchor].CompareTo(order[b.Anchor]));

        var sites = new List<AttentionSite>(matches.Count);
        for (int layer = 0; layer < matches.Count; layer++)
        {
            var site = matches[layer].Site with { Layer = layer };
            if (site.WindowSource == WindowSource.None)
            {
                var (window, source) = config.WindowOf(layer);
                if (source != WindowSource.None)
                    site = site with { Window = window, WindowSource = source };
            }
            sites.Add(site);
        }
        return new DetectionReport(sites, ctx.Issues);
    }
}
