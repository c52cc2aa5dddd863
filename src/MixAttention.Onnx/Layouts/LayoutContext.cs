using MixAttention.Onnx.Detection;

namespace MixAttention.Onnx.Layouts;

/// <summary>Everything a layout is parsed, scaled and validated against: the model's layers and the <c>--window</c> option.</summary>
public sealed class LayoutContext
{
    /// <summary>Creates a context. <paramref name="layers"/> must be layers 0..n-1 in order.</summary>
    /// <exception cref="LayoutException">The layer list is empty, out of order, or has invalid shapes/windows.</exception>
    public LayoutContext(IReadOnlyList<LayerInfo> layers, int? commandLineWindow = null)
    {
        ArgumentNullException.ThrowIfNull(layers);
        if (layers.Count == 0)
            throw new LayoutException(LayoutRule.ModelInfo, "the model has no attention layers: nothing to lay out");
        for (var i = 0; i < layers.Count; i++)
        {
            var l = layers[i];
            if (l.Layer != i)
                throw new LayoutException(LayoutRule.ModelInfo,
                    $"model info: expected layer {i} at position {i} but found layer {l.Layer} (layers must be 0..{layers.Count - 1}, each once, in order)", i);
            if (l.NumHeads <= 0 || l.KvNumHeads <= 0 || l.HeadSize <= 0)
                throw new LayoutException(LayoutRule.ModelInfo,
                    $"model info: layer {i} has heads={l.NumHeads}, kv heads={l.KvNumHeads}, head size={l.HeadSize}; all must be > 0", i);
            if (l.Window < 0)
                throw new LayoutException(LayoutRule.ModelInfo, $"model info: layer {i} has a negative window {l.Window}", i);
            if (l.SharesKvOf is { } src && (src < 0 || src >= i || layers[src].SharesKvOf is not null))
                throw new LayoutException(LayoutRule.ModelInfo, $"model info: layer {i} shares the cache of layer {src}, which is not an earlier layer with a cache of its own", i);
        }
        if (commandLineWindow is <= 0)
            throw new LayoutException(LayoutRule.InvalidWindow, $"--window must be > 0 (got {commandLineWindow})");
        Layers = layers.ToArray();
        CommandLineWindow = commandLineWindow;
    }

    /// <summary>Per-layer model facts, index = layer.</summary>
    public IReadOnlyList<LayerInfo> Layers { get; }

    /// <summary>The <c>--window</c> value, if given; it wins over the model's own windows for sliding tokens and presets.</summary>
    public int? CommandLineWindow { get; }

    /// <summary>Number of attention layers in the model.</summary>
    public int LayerCount => Layers.Count;

    /// <summary>A context from detected attention sites (any order; must cover layers 0..n-1 exactly once).</summary>
    public static LayoutContext FromSites(IEnumerable<AttentionSite> sites, int? commandLineWindow = null)
    {
        ArgumentNullException.ThrowIfNull(sites);
        var sorted = sites.OrderBy(s => s.Layer).Select(LayerInfo.FromSite).ToArray();
        return new LayoutContext(sorted, commandLineWindow);
    }

    /// <summary>A context for a model whose layers all look alike (tests, docs, what-if reports).</summary>
    /// <param name="layerCount">Number of layers.</param>
    /// <param name="commandLineWindow">The <c>--window</c> value.</param>
    /// <param name="numHeads">Query heads per layer.</param>
    /// <param name="kvNumHeads">KV heads per layer.</param>
    /// <param name="headSize">Head size.</param>
    /// <param name="elementType">ONNX element type (default 10 = float16).</param>
    /// <param name="modelWindow">The model's own window on every layer (0 = global).</param>
    public static LayoutContext Uniform(int layerCount, int? commandLineWindow = null, int numHeads = 32, int kvNumHeads = 8,
        int headSize = 128, int elementType = 10, int modelWindow = 0)
    {
        if (layerCount <= 0)
            throw new LayoutException(LayoutRule.ModelInfo, $"layer count must be > 0 (got {layerCount})");
        var source = modelWindow > 0 ? WindowSource.HfConfig : WindowSource.None;
        var layers = Enumerable.Range(0, layerCount)
            .Select(i => new LayerInfo(i, numHeads, kvNumHeads, headSize, elementType, modelWindow, source))
            .ToArray();
        return new LayoutContext(layers, commandLineWindow);
    }

    /// <summary>
    /// The window a sliding layer gets when the layout does not state one: <c>--window</c>, else the model's own window
    /// for that layer, else a <see cref="LayoutException"/> (<see cref="LayoutRule.MissingWindow"/>).
    /// </summary>
    public int SlidingWindowFor(int layer, string what)
    {
        if (CommandLineWindow is { } w)
            return w;
        if (layer >= 0 && layer < Layers.Count && Layers[layer].Window > 0)
            return Layers[layer].Window;
        throw new LayoutException(LayoutRule.MissingWindow,
            $"layer {layer}: {what} is sliding but has no window: pass --window, or use a model that defines a sliding window for layer {layer}", layer);
    }
}
