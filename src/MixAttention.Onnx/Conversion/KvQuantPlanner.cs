using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Layouts;
using MixAttention.Onnx.Lowering;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Conversion;

/// <summary>
/// Decides every owner cache's element type (the layer's <c>kv_dtype</c>, else <c>--kv-dtype</c>; readers inherit
/// their owner's and may only repeat it) and, for quantized caches, its scales: from the calibration's absmax or a fixed
/// rule, reduced to the granularity asked for, <c>scale = absmax / qmax</c> (qmax 127 for int8, 448 for fp8 E4M3).
/// </summary>
internal static class KvQuantPlanner
{
    /// <summary>The quantized owners (a float cache has no entry); throws naming the layer whose type conflicts.</summary>
    public static Dictionary<int, CacheQuantization> Plan(MixAttentionLayout layout, IReadOnlyList<AttentionSite> sites, ConversionOptions options)
    {
        var rule = KvScaleRule.Parse(options.KvScale);
        var types = new Dictionary<int, int>();
        foreach (var owner in layout.Owners)
        {
            var asked = layout[owner].KvDType;
            types[owner] = KvDTypes.Resolve(asked ?? options.KvDType, sites[owner].ElementType,
                asked is null ? "--kv-dtype" : $"layer {owner} (\"kv_dtype\" in the layout)");
        }
        foreach (var l in layout.Layers)
        {
            if (l.IsOwner || l.KvDType is not { } asked) continue;
            int ownerType = types[l.KvSource];
            int readerType = KvDTypes.Resolve(asked, sites[l.Layer].ElementType, $"layer {l.Layer} (\"kv_dtype\" in the layout)");
            if (readerType != ownerType)
                throw new MixAttentionException($"layer {l.Layer} asks for {asked} caches (\"kv_dtype\"), but it reads layer {l.KvSource}'s cache, which is " +
                    $"{ElementTypes.DTypeName(ownerType)}: a layer that reads another's cache stores nothing and uses its owner's type. Remove its kv_dtype or give layer {l.KvSource} the same.");
        }

        var result = new Dictionary<int, CacheQuantization>();
        foreach (var (owner, type) in types)
        {
            if (ElementTypes.QuantizedMax(type) is not { } qmax) continue;
            var site = sites[owner];
            int channels = site.KvNumHeads * site.HeadSize;
            float[] key, value;
            switch (rule.Kind)
            {
                case KvScaleRule.Kinds.Calibrate:
                    var calibration = options.Calibration ?? throw new MixAttentionException(
                        "quantized caches with --kv-scale calibrate need a calibration run (--calibrate TEXT|TOKENS through the source model); or pick a fixed rule: --kv-scale absmax:X or fixed:S.");
                    var seen = calibration.AbsMax(owner) ?? throw new MixAttentionException(
                        $"the calibration run saw no cache of layer {owner} (it saw layers {string.Join(", ", calibration.Layers.Order())}); calibrate with the source of this conversion.");
                    if (seen.Key.Length != channels || seen.Value.Length != channels)
                        throw new MixAttentionException($"the calibration of layer {owner} has {seen.Key.Length} channels, but its cache has {site.KvNumHeads}×{site.HeadSize}; calibrate with the source of this conversion.");
                    key = Scales(seen.Key, site.KvNumHeads, options.KvScaleGranularity, qmax);
                    value = Scales(seen.Value, site.KvNumHeads, options.KvScaleGranularity, qmax);
                    break;
                default:
                    float s = rule.Kind == KvScaleRule.Kinds.AbsMax ? rule.Value / qmax : rule.Value;
                    int n = Count(options.KvScaleGranularity, site.KvNumHeads, site.HeadSize);
                    key = Enumerable.Repeat(s, n).ToArray();
                    value = Enumerable.Repeat(s, n).ToArray();
                    break;
            }
            result[owner] = new CacheQuantization(type, options.KvScaleGranularity, key, value);
        }
        return result;
    }

    /// <summary>Number of scales of one tensor at a granularity.</summary>
    public static int Count(KvScaleGranularity granularity, int kvHeads, int headSize) => granularity switch
    {
        KvScaleGranularity.Tensor => 1,
        KvScaleGranularity.Head => kvHeads,
        _ => kvHeads * headSize,
    };

    /// <summary>
    /// absmax per head and channel → scales at <paramref name="granularity"/>. A group that never saw a non-zero value
    /// (a channel that is always 0) takes the tensor's largest, so a value that does appear later is not saturated at once.
    /// </summary>
    internal static float[] Scales(float[] absMax, int kvHeads, KvScaleGranularity granularity, float qmax)
    {
        int headSize = absMax.Length / kvHeads;
        float all = absMax.DefaultIfEmpty(0).Max();
        float[] groups = granularity switch
        {
            KvScaleGranularity.Tensor => new[] { all },
            KvScaleGranularity.Head => Enumerable.Range(0, kvHeads).Select(h => absMax.AsSpan(h * headSize, headSize).ToArray().Max()).ToArray(),
            _ => (float[])absMax.Clone(),
        };
        for (int i = 0; i < groups.Length; i++)
        {
            float a = groups[i] > 0 && float.IsFinite(groups[i]) ? groups[i] : all > 0 && float.IsFinite(all) ? all : qmax;
            groups[i] = a / qmax;
        }
        return groups;
    }

    /// <summary>Per-head scales repeated over the channels of the head (exactly the same quantization, in GQA's PER_CHANNEL shape).</summary>
    public static CacheQuantization ExpandHeadsToChannels(CacheQuantization q, int kvHeads, int headSize) =>
        q.Granularity != KvScaleGranularity.Head ? q : q with
        {
            Granularity = KvScaleGranularity.Channel,
            KeyScales = Enumerable.Range(0, kvHeads * headSize).Select(i => q.KeyScales[i / headSize]).ToArray(),
            ValueScales = Enumerable.Range(0, kvHeads * headSize).Select(i => q.ValueScales[i / headSize]).ToArray(),
        };
}
