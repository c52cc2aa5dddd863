using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Layouts;
using MixAttention.Onnx.Onnx.Proto;
using static MixAttention.Onnx.Graph.GraphBuilder;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Lowering;

/// <summary>
/// Lowers to plain standard ONNX that any ORT build runs — the semantic reference for tests: every owner
/// keeps a growing concatenated cache, windows are explicit additive masks, readers are wired to their
/// owner's present value. No custom op, no padding support (every sequence has the same length).
/// A quantized cache is spelled out too, so the reference is a float reference of the same quantization: this step's
/// K/V are quantized on write (<c>Cast</c> to fp32, <c>Mul</c> by <c>Reciprocal</c>(scale), <c>Round</c> half to even,
/// <c>Clip</c> to [−128, 127], <c>Cast</c> to int8; for fp8 one saturating <c>Cast</c>, which rounds to nearest even) and the whole cache
/// is dequantized on read (<c>Cast</c> to fp32, <c>Mul</c> by the scale, <c>Cast</c> to the model's type).
/// </summary>
internal sealed class ReferenceBackend : ILoweringBackend
{
    /// <inheritdoc/>
    public string Name => BackendName.Reference;

    /// <inheritdoc/>
    public void Check(LoweringContext ctx)
    {
        // Cast to float8e4m3fn (with saturate) exists from ONNX opset 19; raising a model's opset would change the meaning
        // of its other nodes, so an older model cannot hold an fp8 reference.
        if (ctx.Quantized.Values.Any(q => q.Format.ElementType == Plan.ElementTypes.Float8E4M3) && ctx.Builder.Opset < 19)
            throw new MixAttentionException($"the reference backend writes fp8 caches with Cast-19 (saturate), but this model imports ONNX opset {ctx.Builder.Opset}; " +
                "use --kv-dtype int8, another backend (ops, ort-gqa), or export the model with opset ≥ 19.");
    }

    /// <inheritdoc/>
    public CapacityRule Capacity(LayerAssignment owner) => CapacityRule.Growing;

    /// <inheritdoc/>
    public (string Past, string Present) CacheAxis(LayerAssignment owner) => ("past_sequence_length", "total_sequence_length");

    /// <summary>Past length P (int64 [1]) read from the first owner's past key.</summary>
    private static string PastLength(LoweringContext ctx, string anyPastKey) => ctx.Shared("ref_past_length", () =>
        ctx.Builder.ShapeSlice("past_length", anyPastKey, 2, 3));

    /// <inheritdoc/>
    public LoweredSite Lower(LoweringContext ctx, AttentionSite site, LayerAssignment a, (string Key, string Value) cache)
    {
        var b = ctx.Builder;
        string pastKeyForLength = ctx.Shared("ref_first_past_key", () => cache.Key);
        string Positions() => ctx.Shared("ref_positions", () =>
        {
            var p = b.Squeeze("past_length_scalar", PastLength(ctx, pastKeyForLength), 0);
            var s = b.Squeeze("step_scalar", ctx.StepLength, 0);
            var end = b.Op("Add", "total_length_scalar", new[] { p, s });
            var range = b.Op("Range", "positions_1d", new[] { p, end, b.Int64s("one", new long[] { 1 }, scalar: true) });
            var row = b.Unsqueeze("positions_row", range, 0);
            var batch = b.ShapeSlice("batch_size", ctx.InputIds, 0, 1);
            var shape = b.Op("Concat", "positions_shape", new[] { batch, ctx.StepLength }, "", Int("axis", 0));
            return b.Op("Expand", "positions", new[] { row, shape });
        });

        string keys, values, presentK = "", presentV = "";
        string q;
        if (a.IsOwner)
        {
            var (qq, k, v) = SiteInputs.Bshd(ctx, site, withKv: true, Positions);
            q = qq;
            var quant = ctx.QuantizationOf(site.Layer);
            var newK = ToBnsh(b, k!, site.KvNumHeads, site.HeadSize, $"L{site.Layer}/k");
            var newV = ToBnsh(b, v!, site.KvNumHeads, site.HeadSize, $"L{site.Layer}/v");
            if (quant is { } qz)
            {
                newK = Quantize(ctx, b, newK, qz.KeyScale, qz.Format.ElementType, site, "k");
                newV = Quantize(ctx, b, newV, qz.ValueScale, qz.Format.ElementType, site, "v");
            }
            presentK = Append(b, cache.Key, newK, quant?.Format.ElementType, $"L{site.Layer}/present_key");
            presentV = Append(b, cache.Value, newV, quant?.Format.ElementType, $"L{site.Layer}/present_value");
            (keys, values) = (presentK, presentV);
        }
        else
        {
            (q, _, _) = SiteInputs.Bshd(ctx, site, withKv: false, Positions);
            (keys, values) = cache;
        }
        if (ctx.QuantizationOf(a.KvSource) is { } read)
        {
            // One dequantization per cache and step: the owner and its readers attend over the same float tensor.
            var (k0, v0) = (keys, values);
            keys = ctx.Shared($"ref_dequantized_{k0}", () => Dequantize(b, k0, read.KeyScale, site, "k"));
            values = ctx.Shared($"ref_dequantized_{v0}", () => Dequantize(b, v0, read.ValueScale, site, "v"));
        }

        int group = site.NumHeads / site.KvNumHeads;
        var qh = ToBnsh(b, q, site.NumHeads, site.HeadSize, $"L{site.Layer}/q");
        var kh = RepeatKv(b, keys, group, site, "k");
        var vh = RepeatKv(b, values, group, site, "v");
        var kt = b.Op("Transpose", $"L{site.Layer}/kt", new[] { kh }, "", Ints("perm", 0, 1, 3, 2));
        var scores = b.Op("MatMul", $"L{site.Layer}/scores", new[] { qh, kt });
        scores = b.Op("Mul", $"L{site.Layer}/scaled", new[] { scores, b.Scalar("scale", site.Scale, site.ElementType) });
        if (site.Softcap > 0)
        {
            var cap = b.Scalar("softcap", site.Softcap, site.ElementType);
            var t = b.Op("Tanh", $"L{site.Layer}/softcap_tanh", new[] { b.Op("Div", $"L{site.Layer}/softcap_div", new[] { scores, cap }) });
            scores = b.Op("Mul", $"L{site.Layer}/softcapped", new[] { t, cap });
        }
        scores = b.Op("Add", $"L{site.Layer}/masked", new[] { scores, Mask(ctx, a.Window, keys, site.ElementType) });
        var probs = b.Op("Softmax", $"L{site.Layer}/probs", new[] { scores }, "", Int("axis", -1));
        var ctxv = b.Op("MatMul", $"L{site.Layer}/context", new[] { probs, vh });
        var merged = SiteInputs.ToBshd(b, ctxv, HeadLayout.BNSH, site.NumHeads * site.HeadSize, $"L{site.Layer}/out");
        return new LoweredSite(SiteInputs.FromBshd(b, site, merged), a.IsOwner ? presentK : null, a.IsOwner ? presentV : null);
    }

    /// <summary>x [B, Hkv, S, D] (model type) → the cache type: saturate(round(x / scale)) in fp32.</summary>
    private static string Quantize(LoweringContext ctx, Graph.GraphBuilder b, string x, string scale, int cacheType, AttentionSite site, string what)
    {
        var stem = $"L{site.Layer}/{what}_quantize";
        var f = site.ElementType == (int)TensorProto.Types.DataType.Float ? x
            : b.Op("Cast", $"{stem}_fp32", new[] { x }, "", Int("to", (long)TensorProto.Types.DataType.Float));
        // x · (1 / scale), not x / scale: ORT's GQA and our ops multiply by the fp32 inverse (docs/ops.md), and the two
        // differ by one ulp often enough to move a value across a rounding boundary.
        var inverse = ctx.Shared($"ref_inverse_{scale}", () => b.Op("Reciprocal", $"{stem}_inverse_scale", new[] { scale }));
        var scaled = b.Op("Mul", $"{stem}_scaled", new[] { f, inverse });
        if (cacheType == Plan.ElementTypes.Float8E4M3)
            return b.Op("Cast", $"{stem}_fp8", new[] { scaled }, "", Int("to", cacheType), Int("saturate", 1));
        var rounded = b.Op("Round", $"{stem}_round", new[] { scaled });
        var clipped = b.Op("Clip", $"{stem}_clip", new[] { rounded, b.Scalar("int8_min", -128f, (int)TensorProto.Types.DataType.Float), b.Scalar("int8_max", 127f, (int)TensorProto.Types.DataType.Float) });
        return b.Op("Cast", $"{stem}_int8", new[] { clipped }, "", Int("to", cacheType));
    }

    /// <summary>
    /// past ++ new along the sequence axis. ONNX Concat has no float8 types, so fp8 codes are concatenated as their
    /// (exact) fp32 values and cast back with saturate, which returns the same codes.
    /// </summary>
    private static string Append(Graph.GraphBuilder b, string past, string next, int? cacheType, string stem)
    {
        if (cacheType != Plan.ElementTypes.Float8E4M3)
            return b.Op("Concat", stem, new[] { past, next }, "", Int("axis", 2));
        var f32 = (long)TensorProto.Types.DataType.Float;
        var both = b.Op("Concat", $"{stem}_fp32", new[]
        {
            b.Op("Cast", $"{stem}_past_fp32", new[] { past }, "", Int("to", f32)),
            b.Op("Cast", $"{stem}_new_fp32", new[] { next }, "", Int("to", f32)),
        }, "", Int("axis", 2));
        return b.Op("Cast", stem, new[] { both }, "", Int("to", cacheType.Value), Int("saturate", 1));
    }

    /// <summary>A cache [B, Hkv, T, D] of int8/fp8 codes → q · scale in the model's type.</summary>
    private static string Dequantize(Graph.GraphBuilder b, string cache, string scale, AttentionSite site, string what)
    {
        var stem = $"L{site.Layer}/{what}_dequantize";
        var f = b.Op("Cast", $"{stem}_fp32", new[] { cache }, "", Int("to", (long)TensorProto.Types.DataType.Float));
        var x = b.Op("Mul", $"{stem}_mul", new[] { f, scale });
        return site.ElementType == (int)TensorProto.Types.DataType.Float ? x
            : b.Op("Cast", $"{stem}_model_type", new[] { x }, "", Int("to", site.ElementType));
    }

    private static string ToBnsh(Graph.GraphBuilder b, string x, int heads, int headSize, string stem)
    {
        var r = b.Op("Reshape", $"{stem}_heads", new[] { x, b.Int64s("shape", new long[] { 0, 0, heads, headSize }) });
        return b.Op("Transpose", $"{stem}_bnsh", new[] { r }, "", Ints("perm", 0, 2, 1, 3));
    }

    /// <summary>[B, Hkv, T, D] → [B, Hq, T, D] by repeating each KV head for its query group.</summary>
    private static string RepeatKv(Graph.GraphBuilder b, string x, int group, AttentionSite site, string what)
    {
        if (group == 1) return x;
        var u = b.Unsqueeze($"L{site.Layer}/{what}_group_axis", x, 2);
        var e = b.Op("Expand", $"L{site.Layer}/{what}_repeat", new[] { u, b.Int64s("shape", new long[] { 1, 1, group, 1, 1 }) });
        return b.Op("Reshape", $"L{site.Layer}/{what}_repeated", new[] { e, b.Int64s("shape", new long[] { 0, site.NumHeads, -1, site.HeadSize }) });
    }

    /// <summary>Additive mask [S, T]: 0 where key position j is visible to query position p (j ≤ p, and j > p − W when sliding), −∞ elsewhere.</summary>
    private static string Mask(LoweringContext ctx, int window, string keys, int elementType) => ctx.Shared($"ref_mask_w{window}_t{elementType}", () =>
    {
        var b = ctx.Builder;
        var total = b.Squeeze("mask_total", b.ShapeSlice("mask_total_1d", keys, 2, 3), 0);
        var step = b.Squeeze("mask_step", ctx.StepLength, 0);
        var past = b.Op("Sub", "mask_past", new[] { total, step });
        var one = b.Int64s("one", new long[] { 1 }, scalar: true);
        var qpos = b.Unsqueeze("mask_qpos", b.Op("Range", "mask_qpos_1d", new[] { past, total, one }), 1);
        var kpos = b.Unsqueeze("mask_kpos", b.Op("Range", "mask_kpos_1d", new[] { b.Int64s("zero", new long[] { 0 }, scalar: true), total, one }), 0);
        // Not(Greater) rather than LessOrEqual: the latter needs opset 12 and some exports are opset 11.
        var allowed = b.Op("Not", "mask_causal", new[] { b.Op("Greater", "mask_future", new[] { kpos, qpos }) });
        if (window > 0)
        {
            var lowest = b.Op("Sub", "mask_window_start", new[] { qpos, b.Int64s("window", new long[] { window }, scalar: true) });
            allowed = b.Op("And", "mask_allowed", new[] { allowed, b.Op("Greater", "mask_in_window", new[] { kpos, lowest }) });
        }
        return b.Op("Where", $"mask_w{window}", new[] { allowed, b.Scalar("zero", 0f, elementType), b.Scalar("minus_inf", float.NegativeInfinity, elementType) });
    });
}
