namespace MixAttention.Onnx.Layouts;

/// <summary>
/// Checks a layout against a model. Rules (each error names the layer and the rule):
/// the layer count matches; windows are ≥ 0; a layer reads itself or an earlier layer; the layer it reads owns a
/// cache (reads itself); a global reader reads a global owner and a sliding reader a sliding owner whose window is
/// the same or larger; reader and owner agree in heads, kv heads, head size and element type.
/// </summary>
public static class LayoutValidator
{
    /// <summary>Throws the first problem <see cref="FindProblems"/> reports.</summary>
    /// <exception cref="LayoutException">The layout is not valid for the model.</exception>
    public static void Validate(MixAttentionLayout layout, LayoutContext ctx)
    {
        var problems = FindProblems(layout, ctx);
        if (problems.Count == 0)
            return;
        var first = problems[0];
        if (problems.Count == 1)
            throw first;
        throw new LayoutException(first.Rule, $"{first.Message} (and {problems.Count - 1} more problem{(problems.Count > 2 ? "s" : "")})", first.Layer);
    }

    /// <summary>True when <see cref="FindProblems"/> finds nothing.</summary>
    public static bool IsValid(MixAttentionLayout layout, LayoutContext ctx) => FindProblems(layout, ctx).Count == 0;

    /// <summary>Every problem of the layout for this model, in layer order (empty when valid).</summary>
    public static IReadOnlyList<LayoutException> FindProblems(MixAttentionLayout layout, LayoutContext ctx)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(ctx);
        var problems = new List<LayoutException>();
        if (layout.Count != ctx.LayerCount)
        {
            problems.Add(new LayoutException(LayoutRule.LayerCount,
                $"layout '{layout.Name}' has {layout.Count} layer{(layout.Count == 1 ? "" : "s")} but the model has {ctx.LayerCount}: give exactly one token/entry per layer"));
            return problems;
        }

        var layers = layout.Layers;
        for (var i = 0; i < layers.Count; i++)
        {
            var l = layers[i];
            if (l.Window < 0)
            {
                problems.Add(new LayoutException(LayoutRule.InvalidWindow,
                    $"layer {i}: window {l.Window} is negative; use 0 for global or W > 0 for sliding", i));
                continue;
            }
            var src = l.KvSource;
            if (src < 0 || src > i)
            {
                problems.Add(new LayoutException(LayoutRule.ForwardReference,
                    $"layer {i} reads layer {src}: a layer may only read its own cache or an earlier layer's (0..{i})", i));
                continue;
            }
            if (src == i)
                continue;

            var owner = layers[src];
            if (!owner.IsOwner)
            {
                problems.Add(new LayoutException(LayoutRule.SourceNotOwner,
                    $"layer {i} reads layer {src}, which owns no cache (layer {src} itself reads layer {owner.KvSource}); point layer {i} at the owner {owner.KvSource} instead", i));
                continue;
            }
            if (l.IsGlobal && owner.IsSliding)
            {
                problems.Add(new LayoutException(LayoutRule.KindMismatch,
                    $"layer {i} is global but reads layer {src}, a sliding owner (window {owner.Window}) whose cache holds only the last {owner.Window} tokens; a global reader needs a global owner", i));
                continue;
            }
            if (l.IsSliding && owner.IsGlobal)
            {
                problems.Add(new LayoutException(LayoutRule.KindMismatch,
                    $"layer {i} is sliding (window {l.Window}) but reads layer {src}, a global owner; a sliding reader needs a sliding owner", i));
                continue;
            }
            if (l.IsSliding && l.Window > owner.Window)
            {
                problems.Add(new LayoutException(LayoutRule.WindowTooLarge,
                    $"layer {i} has window {l.Window} but reads layer {src} whose window is {owner.Window}; a sliding reader's window must be the same as or smaller than its owner's", i));
                continue;
            }
            var a = ctx.Layers[i];
            var b = ctx.Layers[src];
            if (a.NumHeads != b.NumHeads || a.KvNumHeads != b.KvNumHeads || a.HeadSize != b.HeadSize || a.ElementType != b.ElementType)
            {
                problems.Add(new LayoutException(LayoutRule.ShapeMismatch,
                    $"layer {i} reads layer {src} but their shapes differ: heads {a.NumHeads} vs {b.NumHeads}, kv heads {a.KvNumHeads} vs {b.KvNumHeads}, head size {a.HeadSize} vs {b.HeadSize}, element type {a.ElementType} vs {b.ElementType}; a reader must match its owner", i));
            }
        }
        return problems;
    }

    /// <summary>
    /// Where the converted model will attend differently from the original (empty = exact): layers made sliding or
    /// given a smaller window than the model's own, layers made global where the model was sliding, and readers
    /// (which use another layer's keys/values instead of their own).
    /// </summary>
    public static IReadOnlyList<string> Differences(MixAttentionLayout layout, LayoutContext ctx)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(ctx);
        var notes = new List<string>();
        var n = Math.Min(layout.Count, ctx.LayerCount);
        for (var i = 0; i < n; i++)
        {
            var l = layout[i];
            var own = ctx.Layers[i].Window;
            if (l.IsSliding && own == 0)
                notes.Add($"layer {i}: sliding window {l.Window} where the model attends globally");
            else if (l.IsSliding && l.Window < own)
                notes.Add($"layer {i}: window {l.Window} is smaller than the model's own {own}");
            else if (l.IsSliding && l.Window > own)
                notes.Add($"layer {i}: window {l.Window} is larger than the model's own {own} (it sees tokens it was not trained to see)");
            else if (l.IsGlobal && own > 0)
                notes.Add($"layer {i}: global where the model has a sliding window {own} (it sees tokens it was not trained to see)");
            // A layer that shares a cache in the source computes no keys/values of its own: reading that cache again, or
            // owning a copy of the same keys/values, is what the source does.
            var shares = ctx.Layers[i].SharesKvOf;
            if (!l.IsOwner && l.KvSource != shares)
                notes.Add(shares is { } s
                    ? $"layer {i}: reads layer {l.KvSource}'s keys/values instead of layer {s}'s"
                    : $"layer {i}: reads layer {l.KvSource}'s keys/values instead of computing its own");
        }
        return notes;
    }
}
