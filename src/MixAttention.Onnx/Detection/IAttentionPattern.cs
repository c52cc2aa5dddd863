namespace MixAttention.Onnx.Detection;

/// <summary>
/// One export style's attention pattern. <see cref="Match"/> finds every site of that style and reports
/// (through <see cref="DetectionContext.Report"/>) the near misses with the node and the reason.
/// Patterns only read the graph.
/// </summary>
internal interface IAttentionPattern
{
    /// <summary>The export style this pattern recognises.</summary>
    ExportStyle Style { get; }

    /// <summary>All sites of this style in the graph.</summary>
    IEnumerable<SiteMatch> Match(DetectionContext context);
}
