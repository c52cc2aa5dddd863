using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Layouts;
using MixAttention.Onnx.Onnx.Proto;
using static MixAttention.Onnx.Graph.GraphBuilder;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Lowering;

/// <summary>
/// Lowers to our custom ops (<c>com.mixattention</c>, see docs/ops.md): owners become
/// <c>WindowedAttention</c> (ring cache of the window, or a global cache, updated in place),
/// readers become <c>SharedKvAttention</c> over the owner's updated cache.
/// </summary>
internal sealed class OpsBackend : ILoweringBackend
{
    /// <inheritdoc/>
    public string Name => BackendName.Ops;

    /// <inheritdoc/>
    public void Check(LoweringContext ctx) { }

    /// <inheritdoc/>
    public CapacityRule Capacity(LayerAssignment owner) => owner.IsSliding ? CapacityRule.Window : CapacityRule.MaxLength;

    /// <inheritdoc/>
    public (string Past, string Present) CacheAxis(LayerAssignment owner)
    {
        var name = owner.IsSliding ? $"cache_capacity_w{owner.Window}" : "max_sequence_length";
        return (name, name);
    }

    /// <inheritdoc/>
    public LoweredSite Lower(LoweringContext ctx, AttentionSite site, LayerAssignment a, (string Key, string Value) cache)
    {
        var b = ctx.Builder;
        // Fused rotary (GQA do_rotary) stays fused: our ops rotate this step's queries and keys themselves at
        // positions past_lengths + s — GQA's own rule — from the same cos/sin caches, so no RotaryEmbedding
        // nodes (two launches per owner, one per reader) and no position_ids input are added.
        bool fused = site.Rotary.Kind == RotaryKind.Fused;
        var attrs = new List<AttributeProto>
        {
            Int(OpSpec.AttrNumHeads, site.NumHeads), Int(OpSpec.AttrKvNumHeads, site.KvNumHeads), Int(OpSpec.AttrWindow, a.Window),
            Float(OpSpec.AttrScale, site.Scale), Float(OpSpec.AttrSoftcap, site.Softcap),
        };
        if (fused) attrs.Add(Int(OpSpec.AttrRotaryInterleaved, site.Rotary.Interleaved ? 1 : 0));
        // A quantized cache appends its scales (owner inputs 9/10, reader inputs 7/8, docs/ops.md); the optional rotary
        // inputs before them are then "" when absent. Readers use their owner's scale initializers.
        var quantized = ctx.QuantizationOf(a.KvSource);
        // A paged global cache appends the block table after the scales (owner input 11, reader input 9): the optional
        // inputs before it are "" when absent. Readers take their owner's table (the same graph input).
        bool paged = ctx.IsPaged(a.KvSource);
        string[] rotary = fused ? new[] { site.Rotary.CosCache!, site.Rotary.SinCache! } : quantized is null && !paged ? Array.Empty<string>() : new[] { "", "" };
        string[] scales = quantized is { } qz ? new[] { qz.KeyScale, qz.ValueScale } : paged ? new[] { "", "" } : Array.Empty<string>();
        if (paged) scales = scales.Append(ctx.BlockTable).ToArray();
        if (a.IsOwner)
        {
            var (q, k, v) = SiteInputs.Bshd(ctx, site, withKv: true, rotaryPositions: null);
            var inputs = new[] { q, k!, v!, cache.Key, cache.Value, ctx.PastLengths, ctx.NewLengths }.Concat(rotary).Concat(scales).ToArray();
            var outs = b.Ops(OpSpec.WindowedAttention, $"L{site.Layer}/windowed_attention", inputs, OpSpec.OwnerOutputs.Count, OpSpec.Domain, attrs.ToArray());
            return new LoweredSite(SiteInputs.FromBshd(b, site, outs[0]), outs[1], outs[2]);
        }
        var (qr, _, _) = SiteInputs.Bshd(ctx, site, withKv: false, rotaryPositions: null);
        var readerInputs = new[] { qr, cache.Key, cache.Value, ctx.PastLengths, ctx.NewLengths }.Concat(rotary).Concat(scales).ToArray();
        var o = b.Op(OpSpec.SharedKvAttention, $"L{site.Layer}/shared_kv_attention", readerInputs, OpSpec.Domain, attrs.ToArray());
        return new LoweredSite(SiteInputs.FromBshd(b, site, o), null, null);
    }
}
