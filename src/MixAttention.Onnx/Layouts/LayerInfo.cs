using MixAttention.Onnx.Detection;

namespace MixAttention.Onnx.Layouts;

/// <summary>What a layout needs to know about one layer of the model (taken from its <see cref="AttentionSite"/>).</summary>
/// <param name="Layer">0-based layer index.</param>
/// <param name="NumHeads">Query heads.</param>
/// <param name="KvNumHeads">Key/value heads.</param>
/// <param name="HeadSize">Head size D.</param>
/// <param name="ElementType">ONNX element type of the cache (TensorProto.DataType).</param>
/// <param name="Window">The model's own sliding window for this layer; 0 = global.</param>
/// <param name="WindowSource">Where <paramref name="Window"/> came from.</param>
/// <param name="SharesKvOf">The layer whose cache this layer already reads in the source model (KV sharing); null when it has its own.</param>
public sealed record LayerInfo(
    int Layer,
    int NumHeads,
    int KvNumHeads,
    int HeadSize,
    int ElementType,
    int Window = 0,
    WindowSource WindowSource = WindowSource.None,
    int? SharesKvOf = null)
{
    /// <summary>The model facts of one attention site.</summary>
    public static LayerInfo FromSite(AttentionSite site)
    {
        ArgumentNullException.ThrowIfNull(site);
        return new(site.Layer, site.NumHeads, site.KvNumHeads, site.HeadSize, site.ElementType, site.Window, site.WindowSource, site.SharesKvOf);
    }
}
