namespace MixAttention.Onnx.Detection;

/// <summary>Every attention site of a model, in layer order, and what looked like attention but was not understood.</summary>
public sealed record DetectionReport(IReadOnlyList<AttentionSite> Sites, IReadOnlyList<DetectionIssue> Issues)
{
    /// <summary>The export styles present (usually one).</summary>
    public IReadOnlyList<ExportStyle> Styles => Sites.Select(s => s.Style).Distinct().ToArray();

    /// <summary>The issues that mean the model is not fully understood (convert refuses such a model).</summary>
    public IReadOnlyList<DetectionIssue> Blocking => Issues.Where(i => i.Blocking).ToArray();

    /// <summary>True when every cache input and output is explained and the layers are numbered without doubt.</summary>
    public bool IsComplete => Sites.Count > 0 && Blocking.Count == 0;
}
