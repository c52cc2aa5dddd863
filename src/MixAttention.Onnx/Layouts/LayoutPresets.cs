namespace MixAttention.Onnx.Layouts;

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
