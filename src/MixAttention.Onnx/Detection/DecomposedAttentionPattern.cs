namespace MixAttention.Onnx.Detection;

/// <summary>TorchScript / optimum export: MatMul → scale → mask → Softmax → MatMul with Concat'ed past.</summary>
public sealed class DecomposedAttentionPattern : IAttentionPattern
{
    /// <inheritdoc/>
    public ExportStyle Style => ExportStyle.Decomposed;

    /// <inheritdoc/>
    public IEnumerable<SiteMatch> Match(DetectionContext context)
    {
        yield break; // written against the exported fixtures
    }
}
