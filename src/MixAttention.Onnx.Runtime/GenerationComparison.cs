namespace MixAttention.Onnx.Runtime;

/// <summary>A side-by-side generation of the same prompt by two models.</summary>
public sealed record GenerationComparison(IReadOnlyList<long> Original, IReadOnlyList<long> Converted, GenerationStats OriginalStats, GenerationStats ConvertedStats, SessionKvMemory OriginalMemory, SessionKvMemory ConvertedMemory)
{
    /// <summary>Tokens generated identically before the first difference.</summary>
    public int CommonPrefix => Original.Zip(Converted).TakeWhile(p => p.First == p.Second).Count();
    /// <summary>True when both generated the same tokens.</summary>
    public bool Identical => Original.SequenceEqual(Converted);
}
