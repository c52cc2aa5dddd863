using System.Text.RegularExpressions;
using MixAttention.Onnx.Graph;
using MixAttention.Onnx.Onnx;

namespace MixAttention.Onnx.Detection;

/// <summary>
/// Finds every layer's attention with one pattern per export style, then follows the caches: which site owns which
/// cache input/output pair and which sites read another layer's cache (KV sharing in the source), which layer each
/// site is (from the node scope, else from the cache index, checked against the graph order), and each layer's
/// window (config.json by layer index, checked against the size of the present cache the graph keeps). Every cache
/// input and output the graph has must be explained by a site; what is not is a blocking issue.
/// </summary>
internal static partial class AttentionDetector
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

        var sites = matches.Select(m => m.Site).ToList();
        var sharesWith = FindSharing(sites);
        for (int i = 0; i < sites.Count; i++)
            if (sites[i].ReadsKvOfNode is { } node && sharesWith[i] is null)
                ctx.Block(sites[i].Nodes[0], $"reads the present of '{node}', which is not an attention layer with a cache of its own.");
        var layers = NumberLayers(ctx, matches, sites, sharesWith);
        if (layers is null)
            return new DetectionReport(Array.Empty<AttentionSite>(), ctx.Issues);
        if (sites.Count == 0)
        {
            CheckCoverage(ctx, sites);
            return new DetectionReport(sites, ctx.Issues);
        }

        var numbered = new AttentionSite[sites.Count];
        for (int i = 0; i < sites.Count; i++)
        {
            var site = sites[i] with { Layer = layers[i] };
            if (sharesWith[i] is { } owner)
                site = site with { Cache = null, SharesKvOf = layers[owner] };
            numbered[i] = site;
        }
        Array.Sort(numbered, (a, b) => a.Layer.CompareTo(b.Layer));
        var result = numbered.Select(s => AssignWindow(ctx, s, numbered)).ToArray();
        CheckCoverage(ctx, result);
        return new DetectionReport(result, ctx.Issues);
    }

    /// <summary>
    /// For each site (in graph order), the index of the earlier site whose cache it reads, or null when it owns its
    /// cache: two sites that append to the same cache input are one owner and one reader of its result.
    /// </summary>
    private static int?[] FindSharing(IReadOnlyList<AttentionSite> sites)
    {
        var owners = new Dictionary<string, int>(StringComparer.Ordinal);
        var shares = new int?[sites.Count];
        for (int i = 0; i < sites.Count; i++)
        {
            if (sites[i].ReadsKvOfNode is { } node)
            {
                var source = Enumerable.Range(0, i).FirstOrDefault(j => sites[j].Nodes.Count > 0 && sites[j].Nodes[0] == node, -1);
                if (source >= 0) shares[i] = shares[source] ?? source;
                continue;
            }
            if (sites[i].Cache is not { } cache) continue;
            if (owners.TryGetValue(cache.PastKey, out var owner)) shares[i] = owner;
            else owners[cache.PastKey] = i;
        }
        return shares;
    }

    [GeneratedRegex(@"[/.](?:layers|layer|h|blocks|block)[./_](\d+)(?=[/._])")]
    private static partial Regex ScopeIndex();

    [GeneratedRegex(@"(\d+)(?!.*\d)")]
    private static partial Regex LastNumber();

    /// <summary>
    /// The layer index of each site (graph order in, layer per site out), or null when the sites cannot be numbered
    /// without doubt (then a blocking issue says why). Node scopes (<c>/model/layers.7/self_attn/…</c>) win; without
    /// them the graph order is used, checked against the index each owner's cache carries in its name.
    /// </summary>
    private static int[]? NumberLayers(DetectionContext ctx, IReadOnlyList<SiteMatch> matches, IReadOnlyList<AttentionSite> sites, int?[] sharesWith)
    {
        var n = sites.Count;
        if (n == 0) return Array.Empty<int>();
        var fromScope = new int[n];
        bool scoped = true;
        for (int i = 0; i < n && scoped; i++)
        {
            var m = ScopeIndex().Match(matches[i].Anchor.Name);
            if (!m.Success)
                m = sites[i].Nodes.Select(x => ScopeIndex().Match(x)).FirstOrDefault(x => x.Success) ?? m;
            if (m.Success) fromScope[i] = int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
            else scoped = false;
        }
        if (scoped && fromScope.Distinct().Count() == n && fromScope.Min() == 0 && fromScope.Max() == n - 1)
            return fromScope;

        // Graph order, checked against the caches' own indices where their names carry one.
        for (int i = 0; i < n; i++)
        {
            if (sharesWith[i] is not null || sites[i].Cache is not { } cache) continue;
            var m = LastNumber().Match(cache.PastKey);
            if (m.Success && int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) != i)
            {
                ctx.Block(cache.PastKey, $"the attention at graph position {i} appends to cache '{cache.PastKey}', whose name says layer {m.Groups[1].Value}: " +
                    "the layers cannot be numbered without doubt (node names carry no layer scope).");
                return null;
            }
        }
        return Enumerable.Range(0, n).ToArray();
    }

    /// <summary>
    /// The window of a layer: what the graph states (GQA local_window_size) stays; otherwise config.json / genai_config.json
    /// by layer index; otherwise the size of the present cache the source keeps (W - 1 tokens). A config that contradicts
    /// the present cache is a blocking issue.
    /// </summary>
    private static AttentionSite AssignWindow(DetectionContext ctx, AttentionSite site, IReadOnlyList<AttentionSite> all)
    {
        var cache = site.Cache ?? (site.SharesKvOf is { } o ? all.FirstOrDefault(s => s.Layer == o)?.Cache : null);
        long? keep = cache?.PresentKeep;
        if (site.WindowSource != WindowSource.None)
            return site;
        var (window, source) = ctx.Config.WindowOf(site.Layer);
        if (source != WindowSource.None)
        {
            if (keep is { } k && site.SharesKvOf is null && (window == 0 || (k + 1 != window && k != window)))
                ctx.Block(cache!.PresentKey, window == 0
                    ? $"layer {site.Layer}: the source keeps only the last {k} tokens in '{cache.PresentKey}', but the config says the layer attends globally."
                    : $"layer {site.Layer}: the source keeps the last {k} tokens in '{cache.PresentKey}', but the config says sliding_window {window} (expected {window - 1} kept).");
            return window > 0 ? site with { Window = window, WindowSource = source } : site with { WindowSource = source };
        }
        if (keep is { } kept && site.SharesKvOf is null)
            return site with { Window = (int)Math.Min(int.MaxValue, kept + 1), WindowSource = WindowSource.PresentCache };
        return site;
    }

    /// <summary>Every cache input and output of the graph must belong to a site; the layer count must match the config's.</summary>
    private static void CheckCoverage(DetectionContext ctx, IReadOnlyList<AttentionSite> sites)
    {
        var graph = ctx.Graph;
        var explained = new HashSet<string>(StringComparer.Ordinal);
        foreach (var c in sites.Select(s => s.Cache).OfType<CacheTensors>())
            foreach (var name in new[] { c.PastKey, c.PastValue, c.PresentKey, c.PresentValue })
                if (name is not null) explained.Add(name);
        var unexplained = graph.Proto.Input.Where(i => graph.IsGraphInput(i.Name) && IsCacheTensor(i, "past"))
            .Concat(graph.Proto.Output.Where(o => IsCacheTensor(o, "present")))
            .Select(v => v.Name).Where(name => !explained.Contains(name)).ToList();
        if (unexplained.Count > 0)
            ctx.Block(string.Join(", ", unexplained.Take(6)) + (unexplained.Count > 6 ? $" (+{unexplained.Count - 6} more)" : ""),
                $"{unexplained.Count} cache input/output(s) are not explained by any detected attention layer" +
                (sites.Count > 0 ? $" (layers found: {string.Join(",", sites.Select(s => s.Layer))})" : "") + "; the model's attention is not fully understood.");
        if (ctx.Config.LayerCount is { } count && sites.Count > 0 && count != sites.Count)
            ctx.Block("config.json", $"the config says {count} layers but {sites.Count} attention layer(s) were found.");
    }

    private static bool IsCacheTensor(Onnx.Proto.ValueInfoProto v, string word) =>
        v.Name.Contains(word, StringComparison.OrdinalIgnoreCase)
        && v.Type?.TensorType is { } t && t.Shape?.Dim.Count is 4 or 5
        && t.ElemType is (int)Onnx.Proto.TensorProto.Types.DataType.Float or (int)Onnx.Proto.TensorProto.Types.DataType.Float16
            or (int)Onnx.Proto.TensorProto.Types.DataType.Bfloat16;
}
