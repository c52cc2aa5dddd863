namespace MixAttention.Onnx.Layouts;

/// <summary>The rule a layout broke (or the stage that could not read it).</summary>
public enum LayoutRule
{
    /// <summary>A compact-string token is not <c>N</c>, <c>Ns</c> or <c>NsW</c>.</summary>
    MalformedToken,
    /// <summary>The JSON text or file is not a valid version-1 layout document.</summary>
    MalformedJson,
    /// <summary>The spec names no known preset, file or compact string.</summary>
    UnknownSpec,
    /// <summary>The layout has a different number of layers than the model.</summary>
    LayerCount,
    /// <summary>A layer reads a later layer's cache (or a negative index).</summary>
    ForwardReference,
    /// <summary>A layer reads a layer that does not own a cache itself.</summary>
    SourceNotOwner,
    /// <summary>A global reader reads a sliding owner, or a sliding reader a global owner.</summary>
    KindMismatch,
    /// <summary>A sliding reader's window is larger than its owner's.</summary>
    WindowTooLarge,
    /// <summary>A window is negative, or a sliding layer got a window of 0.</summary>
    InvalidWindow,
    /// <summary>A sliding layer needs a window and neither the command line nor the model gives one.</summary>
    MissingWindow,
    /// <summary>Reader and owner differ in heads, kv heads, head size or element type.</summary>
    ShapeMismatch,
    /// <summary>The model information (attention sites) cannot describe a layout context.</summary>
    ModelInfo,
}
