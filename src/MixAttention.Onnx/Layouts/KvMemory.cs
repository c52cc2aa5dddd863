using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Layouts;

/// <summary>
/// KV cache sizes for reports. Per sequence at context length T, only owners count; a sliding owner holds
/// min(T, W) tokens (plus <c>chunk − 1</c> when it has readers and prefill runs in chunks: the runtime may keep the
/// last chunk's tokens alive until every reader has read them), a global owner T; each slot costs
/// 2 (K and V) × kv heads × head size × element size.
/// </summary>
public static class KvMemory
{
    /// <summary>Size in bytes of one element of ONNX type <paramref name="dataType"/> (TensorProto.DataType).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Not a fixed-size numeric type.</exception>
    public static int ElementSize(int dataType) => ElementTypes.Size(dataType)
        ?? throw new ArgumentOutOfRangeException(nameof(dataType), dataType, "not a fixed-size element type for a KV cache");

    /// <summary>Bytes of one token slot of a layer's cache: 2 × kv heads × head size × element size.</summary>
    public static long BytesPerToken(LayerInfo layer)
    {
        ArgumentNullException.ThrowIfNull(layer);
        return 2L * layer.KvNumHeads * layer.HeadSize * ElementSize(layer.ElementType);
    }

    /// <summary>Token slots of a cache with window <paramref name="window"/> (0 = global) at context length T.</summary>
    public static long Capacity(long contextLength, int window, bool hasReaders = false, int prefillChunk = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(contextLength);
        ArgumentOutOfRangeException.ThrowIfLessThan(prefillChunk, 1);
        if (window <= 0)
            return contextLength;
        return Math.Min(contextLength, CacheCapacity.Ring(window, hasReaders, prefillChunk));
    }

    /// <summary>KV bytes per sequence of the converted model: owners only.</summary>
    /// <param name="layout">A layout valid for <paramref name="ctx"/>.</param>
    /// <param name="ctx">The model.</param>
    /// <param name="contextLength">T.</param>
    /// <param name="prefillChunk">Prefill chunk size; &gt; 1 adds chunk − 1 slots to sliding owners that have readers.</param>
    public static long Layout(MixAttentionLayout layout, LayoutContext ctx, long contextLength, int prefillChunk = 1) =>
        Owners(layout, ctx, contextLength, prefillChunk).Sum(o => o.Bytes);

    /// <summary>Per-owner breakdown of <see cref="Layout"/>.</summary>
    public static IReadOnlyList<OwnerBytes> Owners(MixAttentionLayout layout, LayoutContext ctx, long contextLength, int prefillChunk = 1)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(ctx);
        if (layout.Count != ctx.LayerCount)
            throw new LayoutException(LayoutRule.LayerCount, $"layout '{layout.Name}' has {layout.Count} layers but the model has {ctx.LayerCount}");
        return layout.Owners.Select(o =>
        {
            var readers = layout.ReadersOf(o).Count;
            var w = layout[o].Window;
            var cap = Capacity(contextLength, w, readers > 0, prefillChunk);
            return new OwnerBytes(o, w, cap, readers, cap * BytesPerToken(ctx.Layers[o]));
        }).ToArray();
    }

    /// <summary>
    /// KV bytes per sequence of the unconverted model. By default every layer holds all T tokens: that is what an
    /// exported graph with past/present concatenation (or GQA with <c>local_window_size</c>, which narrows only the
    /// mask) allocates. With <paramref name="honourModelWindows"/> a layer with its own window W counts min(T, W),
    /// which is what a runtime with a windowed cache would hold.
    /// </summary>
    public static long Unconverted(LayoutContext ctx, long contextLength, bool honourModelWindows = false)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        // Layers that share another layer's cache in the source (Gemma-3n) keep none of their own.
        return ctx.Layers.Where(l => l.SharesKvOf is null).Sum(l => Capacity(contextLength, honourModelWindows ? l.Window : 0) * BytesPerToken(l));
    }

    /// <summary>Layout and unconverted bytes together, with the per-owner breakdown.</summary>
    public static KvMemoryEstimate Estimate(MixAttentionLayout layout, LayoutContext ctx, long contextLength,
        int prefillChunk = 1, bool honourModelWindows = false)
    {
        var owners = Owners(layout, ctx, contextLength, prefillChunk);
        return new KvMemoryEstimate(contextLength, owners.Sum(o => o.Bytes), Unconverted(ctx, contextLength, honourModelWindows), owners);
    }
}
