namespace MixAttention.Onnx.Runtime;

/// <summary>
/// A step would write past the end of a global (max-length) cache. Raised before the step runs, so nothing
/// was written; a global cache never wraps.
/// </summary>
public sealed class CacheOverflowException : MixAttentionException
{
    /// <summary>Creates the exception.</summary>
    public CacheOverflowException(int sequence, int length, int newTokens, int capacity)
        : base($"sequence {sequence}: {length} tokens + {newTokens} new would exceed the global KV cache's max length {capacity}; " +
               "remove or reset the sequence, or open the session with a larger MaxLength.")
    {
        Sequence = sequence;
        Length = length;
        NewTokens = newTokens;
        Capacity = capacity;
    }

    /// <summary>The sequence id.</summary>
    public int Sequence { get; }
    /// <summary>Tokens already in the sequence.</summary>
    public int Length { get; }
    /// <summary>Tokens the step wanted to add.</summary>
    public int NewTokens { get; }
    /// <summary>The global cache capacity (max length).</summary>
    public int Capacity { get; }
}
