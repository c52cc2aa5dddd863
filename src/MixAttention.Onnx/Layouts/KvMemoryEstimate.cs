namespace MixAttention.Onnx.Layouts;

/// <summary>KV memory of a layout against the unconverted model, per sequence.</summary>
/// <param name="ContextLength">T, the tokens per sequence.</param>
/// <param name="LayoutBytes">Bytes of the layout's owners.</param>
/// <param name="UnconvertedBytes">Bytes of the unconverted model (see <see cref="KvMemory.Unconverted"/>).</param>
/// <param name="Owners">Per-owner breakdown.</param>
public sealed record KvMemoryEstimate(long ContextLength, long LayoutBytes, long UnconvertedBytes, IReadOnlyList<OwnerBytes> Owners)
{
    /// <summary>Unconverted ÷ layout (how many times smaller the converted cache is).</summary>
    public double Reduction => LayoutBytes == 0 ? double.PositiveInfinity : (double)UnconvertedBytes / LayoutBytes;
}
