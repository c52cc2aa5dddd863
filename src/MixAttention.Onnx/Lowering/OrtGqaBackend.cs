using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Layouts;
using MixAttention.Onnx.Onnx.Proto;
using static MixAttention.Onnx.Graph.GraphBuilder;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Lowering;

/// <summary>
/// Lowers to ONNX Runtime's own <c>com.microsoft.GroupQueryAttention</c> (ORT ≥ 1.31): global owners use a
/// shared past/present buffer of the maximum length, sliding owners a windowed cache
/// (<c>sliding_window_cache=1</c>, <c>local_window_size=W</c>, capacity W), readers of a global cache use
/// GQA's shared-KV mode (empty key/value, the owner's buffer as past). GQA cannot read another layer's
/// windowed cache, so layouts with sliding readers are refused.
/// Quantized caches use GQA's own: <c>k_scale</c>/<c>v_scale</c> at inputs 12/13, <c>k_quant_type</c>/<c>v_quant_type</c>
/// PER_TENSOR or PER_CHANNEL (per-head scales are expanded to per channel), <c>kv_cache_bit_width</c> 8. ORT runs int8
/// caches on the CPU and int8/fp8 on CUDA.
/// <para>
/// Paged (<c>convert --paged</c>): every layer must own a global cache, and each becomes ORT's
/// <c>com.microsoft.PagedAttention</c> (CUDA only) over a token-major pool <c>[num_blocks, block_size, Hkv, D]</c> read
/// through <c>block_table</c>: the step's tokens packed as <c>[B·S, H·D]</c>, <c>cumulative_sequence_length</c> =
/// 0, S, …, B·S computed in the graph (every row of a step holds S tokens), <c>past_seqlens</c> = <c>past_lengths</c>.
/// PagedAttention has no shared-KV readers, no windowed cache and no 8-bit cache wired here, so layouts that need one
/// are refused. The model has no <c>new_lengths</c>: a row not in a step gets a filler token, which the runtime's block
/// table sends to a scratch block where its position has no block (docs/runtime.md, "Paged caches").
/// </para>
/// </summary>
internal sealed class OrtGqaBackend : ILoweringBackend
{
    /// <inheritdoc/>
    public string Name => BackendName.OrtGqa;

    /// <inheritdoc/>
    public void Check(LoweringContext ctx)
    {
        if (ctx.PagedBlockSize is { } blockSize)
        {
            if (blockSize % PagedAttentionBlockMultiple != 0)
                throw new MixAttentionException($"--block-size {blockSize}: ORT's PagedAttention takes pages of a multiple of {PagedAttentionBlockMultiple} " +
                    "(its FlashAttention path; its kernel refuses other sizes when the model runs). Use --block-size 256, or --backend ops for smaller blocks.");
            foreach (var a in ctx.Layout.Layers)
            {
                if (!a.IsOwner || a.IsSliding)
                    throw new MixAttentionException($"layer {a.Layer} {(a.IsOwner ? $"owns a sliding window of {a.Window}" : $"reads layer {a.KvSource}'s cache")}: --paged with the ort-gqa backend lowers " +
                        "every layer to ORT's PagedAttention, which has no shared-KV readers and keeps no windowed cache. Use --layout native (a full cache per layer) for ORT's paged anchor, " +
                        "or --backend ops for paged MixAttention layouts.");
                if (ctx.QuantizationOf(a.Layer) is not null)
                    throw new MixAttentionException($"layer {a.Layer}: --paged with the ort-gqa backend keeps fp16 / bf16 caches (PagedAttention's quantized caches are not supported here); drop --kv-dtype or use --backend ops.");
                var element = ctx.Sites[a.Layer].ElementType;
                if (element is not ((int)TensorProto.Types.DataType.Float16 or (int)TensorProto.Types.DataType.Bfloat16))
                    throw new MixAttentionException($"layer {a.Layer}: ORT's PagedAttention takes fp16 or bf16; this model's attention is {(TensorProto.Types.DataType)element}. " +
                        "Export the model in fp16 or bf16 for --backend ort-gqa --paged, or use --backend ops --paged.");
            }
        }
        foreach (var a in ctx.Layout.Layers)
        {
            if (!a.IsOwner && a.IsSliding)
                throw new MixAttentionException($"layer {a.Layer} is a sliding layer reading layer {a.KvSource}'s cache: ORT's GroupQueryAttention cannot read another layer's windowed cache (sliding_window_cache does not support shared KV). Use --backend ops, or a layout whose sliding layers own their caches.");
            if (!a.IsOwner && ctx.QuantizationOf(a.KvSource) is not null)
                throw new MixAttentionException($"layer {a.Layer} reads layer {a.KvSource}'s quantized cache: ORT's GroupQueryAttention has no shared-KV mode for 8-bit caches " +
                    "(it requires present outputs, which would copy the whole cache every step). Use --backend ops, or a float cache for that owner (\"kv_dtype\": \"auto\" on it in a JSON layout).");
            var site = ctx.Sites[a.Layer];
            if (a.IsOwner && a.IsSliding && ctx.QuantizationOf(a.Layer) is not null && site.HeadSize % 16 != 0)
                throw new MixAttentionException($"layer {a.Layer}: ORT's GroupQueryAttention keeps an 8-bit windowed cache (sliding_window_cache) only for head sizes that are a multiple of 16; this model's is {site.HeadSize}. " +
                    "Use --backend ops or reference, or a float cache for this layer (\"kv_dtype\": \"auto\" in a JSON layout).");
            if (site.ElementType is not ((int)TensorProto.Types.DataType.Float or (int)TensorProto.Types.DataType.Float16 or (int)TensorProto.Types.DataType.Bfloat16))
                throw new MixAttentionException($"layer {a.Layer}: GroupQueryAttention supports fp32 (CPU), fp16 and bf16; the model's attention is {(TensorProto.Types.DataType)site.ElementType}.");
        }
    }

    /// <summary>The block size of a PagedAttention pool must be a multiple of this.</summary>
    private const int PagedAttentionBlockMultiple = 256;

    /// <summary>Input index of GQA's <c>k_scale</c> (then <c>v_scale</c>); cos/sin, position_ids, attention_bias and head_sink come before it.</summary>
    private const int KScaleInput = 12;

    /// <inheritdoc/>
    public CapacityRule Capacity(LayerAssignment owner) => owner.IsSliding ? CapacityRule.Window : CapacityRule.MaxLength;

    /// <inheritdoc/>
    public (string Past, string Present) CacheAxis(LayerAssignment owner)
    {
        var name = owner.IsSliding ? $"cache_capacity_w{owner.Window}" : "max_sequence_length";
        return (name, name);
    }

    /// <summary>seqlens_k (int32 [B]) = past_lengths + new_lengths − 1: GQA counts absolute tokens, minus one.</summary>
    private static string SeqLensK(LoweringContext ctx) => ctx.Shared("gqa_seqlens_k", () =>
    {
        var b = ctx.Builder;
        var total = b.Op("Add", "gqa_total_per_sequence", new[] { ctx.PastLengths, ctx.NewLengths });
        var one = b.Op("Cast", "gqa_one_i32", new[] { b.Int64s("one", new long[] { 1 }, scalar: true) }, "", Int("to", (long)TensorProto.Types.DataType.Int32));
        return b.Op("Sub", "gqa_seqlens_k", new[] { total, one });
    });

    /// <summary>total_sequence_length (int32 scalar) = max over the batch of past_lengths + S.</summary>
    private static string TotalLength(LoweringContext ctx) => ctx.Shared("gqa_total_sequence_length", () =>
    {
        var b = ctx.Builder;
        var step = b.Op("Cast", "gqa_step_i32", new[] { ctx.StepLength }, "", Int("to", (long)TensorProto.Types.DataType.Int32));
        var ends = b.Op("Add", "gqa_ends", new[] { ctx.PastLengths, step });
        var max = b.Op("ReduceMax", "gqa_total_1d", new[] { ends }, "", Int("keepdims", 1));
        return b.Squeeze("gqa_total_sequence_length", max, 0);
    });

    /// <summary>PagedAttention's pools are token-major: <c>[num_blocks, block_size, Hkv, D]</c>.</summary>
    public object[] PoolShape(AttentionSite site, int blockSize) =>
        new object[] { LoweringContext.PoolBlocksDim, (long)blockSize, (long)site.KvNumHeads, (long)site.HeadSize };

    /// <summary>cumulative_sequence_length (int32 [B + 1]) = 0, S, 2S, …, B·S: every row of a step holds S tokens.</summary>
    private static string CumulativeLengths(LoweringContext ctx) => ctx.Shared("paged_cumulative_sequence_length", () =>
    {
        var b = ctx.Builder;
        var step = b.Squeeze("paged_step", ctx.StepLength, 0);
        var batch = b.Squeeze("paged_batch", b.ShapeSlice("paged_batch_1d", ctx.InputIds, 0, 1), 0);
        var end = b.Op("Add", "paged_end", new[] { b.Op("Mul", "paged_tokens", new[] { batch, step }), b.Int64s("paged_one", new long[] { 1 }, scalar: true) });
        var starts = b.Op("Range", "paged_starts", new[] { b.Int64s("paged_zero", new long[] { 0 }, scalar: true), end, step });
        return b.Op("Cast", "paged_cumulative_sequence_length", new[] { starts }, "", Int("to", (long)TensorProto.Types.DataType.Int32));
    });

    /// <summary>A global owner as ORT's PagedAttention (see the class remarks): the step's tokens packed, the pools updated in place.</summary>
    private static LoweredSite LowerPaged(LoweringContext ctx, AttentionSite site, (string Key, string Value) cache)
    {
        var b = ctx.Builder;
        bool fused = site.Rotary.Kind == RotaryKind.Fused;
        var (q, k, v) = SiteInputs.Bshd(ctx, site, withKv: true, rotaryPositions: null);
        string Packed(string x, int heads, string what) =>
            b.Op("Reshape", $"L{site.Layer}/paged_{what}", new[] { x, b.Int64s($"paged_{what}_shape", new long[] { -1, (long)heads * site.HeadSize }) });
        var inputs = new List<string>
        {
            Packed(q, site.NumHeads, "q"), Packed(k!, site.KvNumHeads, "k"), Packed(v!, site.KvNumHeads, "v"), cache.Key, cache.Value,
            CumulativeLengths(ctx), ctx.PastLengths, ctx.BlockTable,
        };
        if (fused) { inputs.Add(site.Rotary.CosCache!); inputs.Add(site.Rotary.SinCache!); }
        var outs = b.Ops("PagedAttention", $"L{site.Layer}/paged_attention", inputs, 3, "com.microsoft",
            Int("num_heads", site.NumHeads), Int("kv_num_heads", site.KvNumHeads), Float("scale", site.Scale), Float("softcap", site.Softcap),
            Int("local_window_size", -1), Int("do_rotary", fused ? 1 : 0), Int("rotary_interleaved", site.Rotary.Interleaved ? 1 : 0));
        // Back to [B, S, H·D]: the query's own shape.
        var output = b.Op("Reshape", $"L{site.Layer}/paged_out", new[] { outs[0], b.Op("Shape", $"L{site.Layer}/paged_q_bshd_shape", new[] { q }) });
        return new LoweredSite(SiteInputs.FromBshd(b, site, output), outs[1], outs[2]);
    }

    /// <inheritdoc/>
    public LoweredSite Lower(LoweringContext ctx, AttentionSite site, LayerAssignment a, (string Key, string Value) cache)
    {
        if (ctx.IsPaged(a.Layer)) return LowerPaged(ctx, site, cache);
        var b = ctx.Builder;
        bool fused = site.Rotary.Kind == RotaryKind.Fused;
        // GQA rotates Q/K itself when the source did (fused rotary): hand it the raw projections and the caches.
        var (q, k, v) = SiteInputs.Bshd(ctx, site, withKv: a.IsOwner, rotaryPositions: null);
        var attrs = new List<AttributeProto>
        {
            Int("num_heads", site.NumHeads), Int("kv_num_heads", site.KvNumHeads),
            Int("local_window_size", a.IsSliding ? a.Window : -1), Float("scale", site.Scale), Float("softcap", site.Softcap),
            Int("do_rotary", fused ? 1 : 0), Int("rotary_interleaved", site.Rotary.Interleaved ? 1 : 0),
        };
        if (a.IsOwner && a.IsSliding) attrs.Add(Int("sliding_window_cache", 1));
        var quantized = ctx.QuantizationOf(a.KvSource);
        if (quantized is { } qz)
        {
            var type = qz.Format.Granularity == Plan.KvScaleGranularity.Tensor ? "PER_TENSOR" : "PER_CHANNEL";
            attrs.Add(Str("k_quant_type", type));
            attrs.Add(Str("v_quant_type", type));
            attrs.Add(Int("kv_cache_bit_width", 8));
        }
        // A reader passes key/value with zero new tokens ([B, 0, Hkv·D]): GQA's shared-KV mode. (Omitting them
        // would make GQA read the query as packed QKV.)
        string emptyKv = a.IsOwner ? "" : ctx.Shared($"gqa_empty_kv_{site.KvNumHeads * site.HeadSize}_{site.ElementType}", () =>
        {
            var batch = b.ShapeSlice("gqa_batch", ctx.InputIds, 0, 1);
            var shape = b.Op("Concat", "gqa_empty_kv_shape", new[] { batch, b.Int64s("zero_width", new long[] { 0, site.KvNumHeads * site.HeadSize }) }, "", Int("axis", 0));
            var zeros = b.Op("ConstantOfShape", "gqa_empty_kv_f32", new[] { shape });
            return b.Op("Cast", "gqa_empty_kv", new[] { zeros }, "", Int("to", site.ElementType));
        });
        var inputs = new List<string>
        {
            q, a.IsOwner ? k! : emptyKv, a.IsOwner ? v! : emptyKv, cache.Key, cache.Value, SeqLensK(ctx), TotalLength(ctx),
        };
        if (fused) { inputs.Add(site.Rotary.CosCache!); inputs.Add(site.Rotary.SinCache!); }
        if (quantized is { } scales)
        {
            while (inputs.Count < KScaleInput) inputs.Add("");
            inputs.Add(scales.KeyScale);
            inputs.Add(scales.ValueScale);
        }
        if (a.IsOwner)
        {
            var outs = b.Ops("GroupQueryAttention", $"L{site.Layer}/gqa", inputs, 3, "com.microsoft", attrs.ToArray());
            return new LoweredSite(SiteInputs.FromBshd(b, site, outs[0]), outs[1], outs[2]);
        }
        var o = b.Op("GroupQueryAttention", $"L{site.Layer}/gqa_shared_kv", inputs, "com.microsoft", attrs.ToArray());
        return new LoweredSite(SiteInputs.FromBshd(b, site, o), null, null);
    }
}
