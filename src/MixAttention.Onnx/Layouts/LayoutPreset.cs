namespace MixAttention.Onnx.Layouts;

/// <summary>A named layout that scales to the model's layer count.</summary>
public sealed class LayoutPreset
{
    private readonly Func<LayoutPreset, LayoutContext, MixAttentionLayout> _build;

    internal LayoutPreset(string name, string summary, string reference, PresetProvenance provenance,
        Func<LayoutPreset, LayoutContext, MixAttentionLayout> build, MixPattern? pattern = null)
    {
        Name = name;
        Summary = summary;
        Reference = reference;
        Provenance = provenance;
        Pattern = pattern;
        _build = build;
    }

    /// <summary>The name used on the command line (lower case).</summary>
    public string Name { get; }

    /// <summary>One line: what the preset does.</summary>
    public string Summary { get; }

    /// <summary>Where the map comes from (URL or document).</summary>
    public string Reference { get; }

    /// <summary>How closely the preset follows its source.</summary>
    public PresetProvenance Provenance { get; }

    /// <summary>The periodic pattern behind the preset, for the Character.AI / MixAttention family; null otherwise.</summary>
    public MixPattern? Pattern { get; }

    /// <summary>
    /// The preset scaled to the model and validated. Sliding owners take <c>--window</c>, else the model's own window
    /// for that layer, else the build fails; sliding readers take their owner's window.
    /// </summary>
    /// <exception cref="LayoutException">A window is missing, or the result is not valid for the model.</exception>
    public MixAttentionLayout Build(LayoutContext ctx)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        var layout = _build(this, ctx);
        LayoutValidator.Validate(layout, ctx);
        return layout;
    }

    /// <summary>The preset for a uniform <paramref name="layerCount"/>-layer model with sliding window <paramref name="window"/>.</summary>
    public MixAttentionLayout Build(int layerCount, int window) => Build(LayoutContext.Uniform(layerCount, window));

    /// <inheritdoc />
    public override string ToString() => Name;

    internal static MixAttentionLayout FromPattern(LayoutPreset preset, LayoutContext ctx)
    {
        var map = preset.Pattern!.Map(ctx.LayerCount);
        var windows = new int[map.Count];
        var layers = new LayerAssignment[map.Count];
        for (var i = 0; i < map.Count; i++)
        {
            var (src, sliding) = map[i];
            windows[i] = !sliding ? 0
                : src == i ? ctx.SlidingWindowFor(i, $"preset '{preset.Name}' makes layer {i} a sliding owner; it")
                : windows[src];
            layers[i] = new LayerAssignment(i, src, windows[i]);
        }
        return new MixAttentionLayout(layers, preset.Name, LayoutOrigin.Preset, preset.Name);
    }
}
