namespace MixAttention.Onnx.Detection;

/// <summary>The graph inputs/outputs that carry one layer's KV cache between steps.</summary>
/// <param name="PastKey">Graph input with the past keys (or the packed past [2,B,H,S,D] for ORT Attention).</param>
/// <param name="PastValue">Graph input with the past values; null when packed.</param>
/// <param name="PresentKey">Graph output with the updated keys (or the packed present).</param>
/// <param name="PresentValue">Graph output with the updated values; null when packed.</param>
/// <param name="Layout">Cache tensor layout: BNSH [B, Hkv, T, D] for every style we know.</param>
public sealed record CacheTensors(string PastKey, string? PastValue, string PresentKey, string? PresentValue, HeadLayout Layout = HeadLayout.BNSH)
{
    /// <summary>Tokens the source keeps in the present (a Slice on the sequence axis after the append); null = all.</summary>
    public long? PresentKeep { get; init; }

    /// <summary>True when keys and values travel in one tensor [2, B, H, T, D].</summary>
    public bool IsPacked => PastValue is null;
}
