namespace MixAttention.Onnx.Layouts;

/// <summary>Where a layout came from.</summary>
public enum LayoutOrigin
{
    /// <summary>Built in code.</summary>
    Programmatic,
    /// <summary>A compact string such as <c>0_1s_1s_3s</c>.</summary>
    CompactString,
    /// <summary>JSON text given inline.</summary>
    Json,
    /// <summary>A JSON file.</summary>
    JsonFile,
    /// <summary>A named preset scaled to the model.</summary>
    Preset,
}
