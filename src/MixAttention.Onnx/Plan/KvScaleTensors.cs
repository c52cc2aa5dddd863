namespace MixAttention.Onnx.Plan;

/// <summary>
/// The scales of a quantized cache: two float32 initializers of the converted model (x ≈ q · scale), named here so the
/// runtime and the tools can find them; every layer that reads the cache uses these same tensors.
/// </summary>
/// <param name="Key">Initializer with the key scales.</param>
/// <param name="Value">Initializer with the value scales.</param>
/// <param name="Granularity">Their shape: per tensor, per KV head or per channel.</param>
public sealed record KvScaleTensors(string Key, string Value, KvScaleGranularity Granularity)
{
    /// <summary>The plan's name of a granularity: tensor, head, channel.</summary>
    internal static string Name(KvScaleGranularity granularity) => granularity switch
    {
        KvScaleGranularity.Tensor => "tensor",
        KvScaleGranularity.Head => "head",
        _ => "channel",
    };

    /// <summary>The granularity a plan (or the command line) names, or null for another word.</summary>
    internal static KvScaleGranularity? Parse(string? name) => name switch
    {
        "tensor" => KvScaleGranularity.Tensor,
        "head" => KvScaleGranularity.Head,
        "channel" => KvScaleGranularity.Channel,
        _ => null,
    };

    /// <summary>The shape of one scale tensor for a cache of <paramref name="kvHeads"/> heads of <paramref name="headSize"/>.</summary>
    internal static long[] Shape(KvScaleGranularity granularity, int kvHeads, int headSize) => granularity switch
    {
        KvScaleGranularity.Tensor => new long[] { 1 },
        KvScaleGranularity.Head => new long[] { 1, kvHeads, 1, 1 },
        _ => new long[] { 1, kvHeads, 1, headSize },
    };
}
