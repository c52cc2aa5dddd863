using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Graph;
using static MixAttention.Onnx.Graph.GraphBuilder;

namespace MixAttention.Onnx.Lowering;

/// <summary>
/// Brings a site's Q/K/V into the one form every backend takes — [B, S, H·D] — whatever the export style
/// wrote: heads-first tensors are transposed back, packed QKV is split, an in-op QKV projection (ORT
/// Attention) is made explicit. Fused rotary (GQA do_rotary) either stays with the attention op, which
/// rotates itself (ops and ort-gqa backends), or becomes RotaryEmbedding nodes fed with absolute positions
/// (reference backend).
/// </summary>
internal static class SiteInputs
{
    /// <summary>Query, and (when <paramref name="withKv"/>) this step's key and value, all [B, S, H·D].</summary>
    /// <param name="ctx">The lowering in progress (its graph builder).</param>
    /// <param name="site">The attention site.</param>
    /// <param name="withKv">Also the key and value (owner layers).</param>
    /// <param name="rotaryPositions">
    /// For a site with fused rotary: the positions [B, S] to spell it out as RotaryEmbedding nodes; null leaves Q/K
    /// unrotated for an attention op that rotates them itself. Sites whose rotary is applied before them (or absent)
    /// never need it.
    /// </param>
    public static (string Q, string? K, string? V) Bshd(LoweringContext ctx, AttentionSite site, bool withKv, Func<string>? rotaryPositions)
    {
        var b = ctx.Builder;
        int qWidth = site.NumHeads * site.HeadSize, kvWidth = site.KvNumHeads * site.HeadSize;
        string q, k, v;
        if (site.QkvLayout == HeadLayout.PackedQkv)
        {
            var packed = site.Query;
            if (site.QkvWeight is { } w)
            {
                packed = b.Op("MatMul", $"L{site.Layer}/qkv", new[] { site.Query, w });
                if (site.QkvBias is { } bias) packed = b.Op("Add", $"L{site.Layer}/qkv_bias", new[] { packed, bias });
            }
            var parts = b.SplitLast($"L{site.Layer}/qkv_split", packed, qWidth, kvWidth, kvWidth);
            (q, k, v) = (parts[0], parts[1], parts[2]);
        }
        else
        {
            q = ToBshd(b, site.Query, site.QkvLayout, qWidth, $"L{site.Layer}/q");
            k = site.Key is null ? "" : ToBshd(b, site.Key, site.QkvLayout, kvWidth, $"L{site.Layer}/k");
            v = site.Value is null ? "" : ToBshd(b, site.Value, site.QkvLayout, kvWidth, $"L{site.Layer}/v");
        }
        if (site.Rotary.Kind == RotaryKind.Fused && rotaryPositions is not null)
        {
            var pos = rotaryPositions();
            q = Rotate(b, site, q, site.NumHeads, pos, "q");
            if (withKv) k = Rotate(b, site, k, site.KvNumHeads, pos, "k");
        }
        return (q, withKv ? k : null, withKv ? v : null);
    }

    private static string Rotate(GraphBuilder b, AttentionSite site, string x, int heads, string positions, string what) =>
        b.Op("RotaryEmbedding", $"L{site.Layer}/rotary_{what}", new[] { x, positions, site.Rotary.CosCache!, site.Rotary.SinCache! }, "com.microsoft",
            Int("interleaved", site.Rotary.Interleaved ? 1 : 0), Int("num_heads", heads));

    /// <summary>[B, H, S, D] → [B, S, H·D]; [B, S, H·D] stays.</summary>
    public static string ToBshd(GraphBuilder b, string value, HeadLayout layout, int width, string stem)
    {
        if (layout == HeadLayout.BSHD) return value;
        var t = b.Op("Transpose", $"{stem}_bshd", new[] { value }, "", Ints("perm", 0, 2, 1, 3));
        return b.Op("Reshape", $"{stem}_merged", new[] { t, b.Int64s("shape", new long[] { 0, 0, width }) });
    }

    /// <summary>[B, S, H·D] → the layout the site's consumers expect.</summary>
    public static string FromBshd(GraphBuilder b, AttentionSite site, string output)
    {
        if (site.OutputLayout == HeadLayout.BSHD) return output;
        var split = b.Op("Reshape", $"L{site.Layer}/out_heads", new[] { output, b.Int64s("shape", new long[] { 0, 0, site.NumHeads, site.HeadSize }) });
        return b.Op("Transpose", $"L{site.Layer}/out_bnsh", new[] { split }, "", Ints("perm", 0, 2, 1, 3));
    }
}
