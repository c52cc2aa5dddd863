namespace MixAttention.Onnx.Runtime;

/// <summary>How much of a converted model <see cref="ConversionCheck"/> runs.</summary>
public enum ConversionCheckMode
{
    /// <summary>Compare with the source when both fit in memory (with room to spare), else load and run one step.</summary>
    Auto,
    /// <summary>Load the converted model and run one prefill step.</summary>
    Load,
    /// <summary>Also decode a short sequence with the source and the converted model and compare their logits.</summary>
    Compare,
    /// <summary>Run nothing.</summary>
    None,
}
