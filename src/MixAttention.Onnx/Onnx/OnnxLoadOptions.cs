namespace MixAttention.Onnx.Onnx;

/// <summary>How <see cref="OnnxModel.Load"/> treats what it reads.</summary>
public sealed record OnnxLoadOptions
{
    /// <summary>Allow external-data locations outside the model's folder (absolute paths, <c>..</c>). Off by default: a model must not make us read arbitrary files.</summary>
    public bool AllowExternalDataOutsideModelFolder { get; init; }
    /// <summary>Check that every external-data file exists and is long enough (cheap: one stat per file).</summary>
    public bool ValidateExternalData { get; init; } = true;
}
