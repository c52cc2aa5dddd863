namespace MixAttention.Onnx.Runtime;

/// <summary>KV-cache memory of a session, and what the unconverted model would need for the same work.</summary>
/// <param name="AllocatedBytes">Cache bytes allocated now (all slots).</param>
/// <param name="BytesPerSequence">Cache bytes one more sequence (of <paramref name="MaxLength"/> tokens) costs.</param>
/// <param name="UnconvertedAllocatedBytes">What the unconverted model needs for the same slots at <paramref name="MaxLength"/> (every layer a full cache).</param>
/// <param name="UnconvertedBytesPerSequence">What the unconverted model needs per sequence of <paramref name="MaxLength"/> tokens.</param>
/// <param name="MaxLength">The sequence length the per-sequence numbers are for.</param>
public sealed record SessionKvMemory(long AllocatedBytes, long BytesPerSequence, long UnconvertedAllocatedBytes, long UnconvertedBytesPerSequence, int MaxLength)
{
    /// <summary>
    /// <see cref="AllocatedBytes"/> split by cache element type (fp32, fp16, bf16, int8, fp8e4m3), as the cache plan
    /// names them; empty when nothing is allocated.
    /// </summary>
    public IReadOnlyDictionary<string, long> AllocatedBytesByDType { get; init; } = new Dictionary<string, long>();

    /// <summary>Unconverted bytes per sequence ÷ converted bytes per sequence.</summary>
    public double Saving => BytesPerSequence == 0 ? 1 : (double)UnconvertedBytesPerSequence / BytesPerSequence;
}
