namespace MixAttention.Onnx.Runtime;

/// <summary>How much of a converted model <see cref="ConversionCheck"/> runs (each mode includes the ones above it).</summary>
public enum ConversionCheckMode
{
    /// <summary>The largest check that fits in memory: compare, else load, else structure.</summary>
    Auto,
    /// <summary>Re-read the written graph (no weights): every node input defined, the cache plan parses and names graph inputs/outputs that exist.</summary>
    Structure,
    /// <summary>Load the converted model and run one prefill step.</summary>
    Load,
    /// <summary>Also decode a short sequence with the source and the converted model and compare their logits.</summary>
    Compare,
    /// <summary>Run nothing.</summary>
    None,
}
