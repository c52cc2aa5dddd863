namespace MixAttention.Onnx.Layouts;

/// <summary>How closely a preset follows its source.</summary>
public enum PresetProvenance
{
    /// <summary>Reproduces its source's per-layer map exactly at the source's layer count; other counts follow a documented rule.</summary>
    Exact,
    /// <summary>A rule stated by its source (e.g. "layer i is global iff (i+1) % 6 == 0"), applied at any layer count.</summary>
    Rule,
    /// <summary>Our reconstruction from a prose description; the source's exact map could not be verified (see docs/layouts.md).</summary>
    Reconstructed,
}

/// <summary>How the global layers of a <see cref="MixPattern"/> share caches.</summary>
public enum GlobalSharing
{
    /// <summary>Every global layer owns its cache.</summary>
    None,
    /// <summary>Every global layer reads the first global layer's cache (Character.AI / LLM Foundry).</summary>
    All,
    /// <summary>Global layers share in pairs: the 2nd reads the 1st, the 4th reads the 3rd, … (MixAttention Pairs).</summary>
    Pairs,
}

/// <summary>How the sliding layers between two global layers share caches.</summary>
public enum SlidingSharing
{
    /// <summary>Every sliding layer owns its cache.</summary>
    None,
    /// <summary>A run of r sliding layers splits into pairs, the last group a triple when r is odd (5 → 2+3, 3 → 3, 4 → 2+2, 1 → 1).</summary>
    PairsThenTriple,
}

/// <summary>
/// The family of periodic layouts the Character.AI / MixAttention presets belong to: a global layer every
/// <see cref="Period"/> layers starting at <see cref="FirstGlobal"/>, sliding layers in between.
/// </summary>
/// <param name="Period">Distance between global layers (6 = 1 global : 5 sliding).</param>
/// <param name="FirstGlobal">Index of the first global layer; layers before it are sliding.</param>
/// <param name="Globals">How global layers share.</param>
/// <param name="Sliding">How sliding layers share within a run.</param>
public sealed record MixPattern(int Period, int FirstGlobal, GlobalSharing Globals, SlidingSharing Sliding)
{
    /// <summary>Per layer: (KV source, sliding?) for an <paramref name="layerCount"/>-layer model.</summary>
    public IReadOnlyList<(int KvSource, bool Sliding)> Map(int layerCount)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(Period, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(FirstGlobal);
        ArgumentOutOfRangeException.ThrowIfLessThan(layerCount, 1);
        var map = new (int KvSource, bool Sliding)[layerCount];
        var globals = new List<int>();
        for (var i = 0; i < layerCount; i++)
        {
            var global = i >= FirstGlobal && (i - FirstGlobal) % Period == 0;
            if (!global)
                continue;
            var g = globals.Count;
            var src = Globals switch
            {
                GlobalSharing.All => g == 0 ? i : globals[0],
                GlobalSharing.Pairs => g % 2 == 0 ? i : globals[g - 1],
                _ => i,
            };
            globals.Add(i);
            map[i] = (src, false);
        }
        // Sliding runs: maximal stretches of non-global layers.
        var start = -1;
        for (var i = 0; i <= layerCount; i++)
        {
            var sliding = i < layerCount && !globals.Contains(i);
            if (sliding && start < 0)
                start = i;
            if (!sliding && start >= 0)
            {
                AssignRun(map, start, i - start);
                start = -1;
            }
        }
        return map;
    }

    private void AssignRun((int KvSource, bool Sliding)[] map, int start, int length)
    {
        if (Sliding == SlidingSharing.None || length == 1)
        {
            for (var i = start; i < start + length; i++)
                map[i] = (i, true);
            return;
        }
        var pos = start;
        var end = start + length;
        while (pos < end)
        {
            var left = end - pos;
            var size = left == 3 ? 3 : 2;
            for (var i = pos; i < pos + size; i++)
                map[i] = (pos, true);
            pos += size;
        }
    }
}

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

/// <summary>The built-in presets. See docs/layouts.md for each one's 24-layer map and source.</summary>
public static class LayoutPresets
{
    private const string LlmFoundry =
        "LLM Foundry block_overrides docstring (llmfoundry/models/mpt/configuration_mpt.py) and test_construct_blocks (tests/models/test_model.py), https://github.com/mosaicml/llm-foundry/pull/1299";
    private const string Lckv = "LCKV README, MixAttention (Pairs) config for 22-layer TinyLlama, https://github.com/whyNLP/LCKV";
    private const string Paper = "MixAttention, arXiv 2409.15012 (variant maps not verified; see docs/layouts.md)";

    /// <summary>
    /// Every layer keeps the model's own window (from the sites) and its own cache, or reads the cache it already reads in
    /// the source (KV sharing, e.g. Gemma-3n). Exact for any model.
    /// </summary>
    public static LayoutPreset Native { get; } = new("native",
        "every layer keeps the model's own window and cache (or the cache it shares in the model); exact, and saves memory on models trained with SWA",
        "the model's own attention sites", PresetProvenance.Exact,
        (p, ctx) => new MixAttentionLayout(
            ctx.Layers.Select(l => new LayerAssignment(l.Layer, l.SharesKvOf ?? l.Layer, l.Window)), p.Name, LayoutOrigin.Preset, p.Name));

    /// <summary>Gemma 3: layer i is global iff (i+1) % 6 == 0, every other layer sliding; no sharing.</summary>
    public static LayoutPreset Gemma3 { get; } = new("gemma3",
        "5 sliding : 1 global, layer i global iff (i+1) % 6 == 0; no sharing",
        "Gemma 3 (arXiv 2503.19786); HF sliding_window_pattern = 6 rule", PresetProvenance.Rule,
        LayoutPreset.FromPattern, new MixPattern(6, 5, GlobalSharing.None, SlidingSharing.None));

    /// <summary>Character.AI as LLM Foundry writes it: global every 6 layers from 0, all reading layer 0; sliding in a pair then a triple.</summary>
    public static LayoutPreset CharacterAi { get; } = new("cai",
        "global at 0, 6, 12, …, all reading layer 0's cache; the 5 sliding layers between share as a pair then a triple",
        LlmFoundry, PresetProvenance.Exact,
        LayoutPreset.FromPattern, new MixPattern(6, 0, GlobalSharing.All, SlidingSharing.PairsThenTriple));

    /// <summary>MixAttention Pairs as LCKV writes it: like <see cref="CharacterAi"/> but global caches shared in pairs.</summary>
    public static LayoutPreset MaPairs { get; } = new("ma-pairs",
        "global at 0, 6, 12, …, sharing in pairs (6 reads 0, 18 reads 12, …); sliding as in cai",
        Lckv, PresetProvenance.Exact,
        LayoutPreset.FromPattern, new MixPattern(6, 0, GlobalSharing.Pairs, SlidingSharing.PairsThenTriple));

    /// <summary>MixAttention "MA", taken to be the Character.AI map (reconstruction).</summary>
    public static LayoutPreset Ma { get; } = new("ma",
        "reconstruction of the paper's MA: the cai map (one global cache computed at layer 0)",
        Paper, PresetProvenance.Reconstructed,
        LayoutPreset.FromPattern, new MixPattern(6, 0, GlobalSharing.All, SlidingSharing.PairsThenTriple));

    /// <summary>MixAttention "MA-Offset" (reconstruction): the global cache is computed deeper, at layer 5.</summary>
    public static LayoutPreset MaOffset { get; } = new("ma-offset",
        "reconstruction of the paper's MA-Offset: global at 5, 11, 17, …, all reading layer 5; sliding as in cai",
        Paper, PresetProvenance.Reconstructed,
        LayoutPreset.FromPattern, new MixPattern(6, 5, GlobalSharing.All, SlidingSharing.PairsThenTriple));

    /// <summary>MixAttention "MA-Offset-Pairs" (reconstruction): offset globals sharing in pairs.</summary>
    public static LayoutPreset MaOffsetPairs { get; } = new("ma-offset-pairs",
        "reconstruction: global at 5, 11, 17, …, sharing in pairs (11 reads 5, 23 reads 17, …); sliding as in cai",
        Paper, PresetProvenance.Reconstructed,
        LayoutPreset.FromPattern, new MixPattern(6, 5, GlobalSharing.Pairs, SlidingSharing.PairsThenTriple));

    /// <summary>All presets, in documentation order.</summary>
    public static IReadOnlyList<LayoutPreset> All { get; } = [Native, Gemma3, CharacterAi, MaPairs, Ma, MaOffset, MaOffsetPairs];

    /// <summary>The preset called <paramref name="name"/> (case-insensitive), if any.</summary>
    public static bool TryGet(string name, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out LayoutPreset preset)
    {
        ArgumentNullException.ThrowIfNull(name);
        preset = All.FirstOrDefault(p => string.Equals(p.Name, name.Trim(), StringComparison.OrdinalIgnoreCase));
        return preset is not null;
    }

    /// <summary>The preset called <paramref name="name"/>.</summary>
    /// <exception cref="LayoutException">No such preset (<see cref="LayoutRule.UnknownSpec"/>).</exception>
    public static LayoutPreset Get(string name) =>
        TryGet(name, out var p) ? p
        : throw new LayoutException(LayoutRule.UnknownSpec, $"unknown layout preset '{name}'; known presets: {string.Join(", ", All.Select(x => x.Name))}");
}
