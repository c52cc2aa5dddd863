namespace MixAttention.Onnx.Detection;

/// <summary>Memory layout of a Q/K/V value as the source graph produces it.</summary>
public enum HeadLayout
{
    /// <summary>[B, S, H·D]: heads packed in the last axis.</summary>
    BSHD,
    /// <summary>[B, H, S, D]: heads as their own axis.</summary>
    BNSH,
    /// <summary>[B, S, (Hq + 2·Hkv)·D]: Q, K and V packed together in one value (the Q value of the site; K and V are null).</summary>
    PackedQkv,
}
