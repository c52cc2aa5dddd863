using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Layouts;

namespace MixAttention.Onnx.Lowering;

/// <summary>Lowers to ORT's own <c>com.microsoft.GroupQueryAttention</c> where the layout allows it.</summary>
public sealed class OrtGqaBackend : ILoweringBackend
{
    /// <inheritdoc/>
    public string Name => "ort-gqa";

    /// <inheritdoc/>
    public void Check(LoweringContext ctx) =>
        throw new MixAttentionException("the ort-gqa backend is not implemented yet; use --backend ops or --backend reference.");

    /// <inheritdoc/>
    public CapacityRule Capacity(LayerAssignment owner) => owner.IsSliding ? CapacityRule.Window : CapacityRule.MaxLength;

    /// <inheritdoc/>
    public (string Past, string Present) CacheAxis(LayerAssignment owner) => ("cache", "cache");

    /// <inheritdoc/>
    public LoweredSite Lower(LoweringContext ctx, AttentionSite site, LayerAssignment assignment, (string Key, string Value) cache) =>
        throw new NotSupportedException();
}
