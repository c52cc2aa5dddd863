namespace MixAttention.Onnx.Runtime;

/// <summary>
/// A sequence swapped out to host memory (<see cref="PreemptionMode.Swap"/>): its length, how many pool blocks it held,
/// and the bytes of every cache tensor it held rows of, one part each in the order <see cref="InPlaceCacheSession.SwapOut"/>
/// read them (per owner cache, K then V: a paged cache's blocks in position order, or a contiguous cache's slot rows).
/// </summary>
internal sealed record SwappedSequence(int Length, int Blocks, IReadOnlyList<byte[]> Parts)
{
    /// <summary>Host bytes held.</summary>
    public long Bytes => Parts.Sum(p => (long)p.Length);
}
