namespace MixAttention.Onnx.Runtime;

/// <summary>
/// A step needs more blocks of the paged global caches than are free (a model converted with <c>--paged</c>; docs/runtime.md).
/// Raised before the step runs and before any block is taken, so nothing was written: remove a sequence (its blocks return
/// to the pool) and retry, or open the session with a larger <see cref="SessionConfig.KvBlocks"/>.
/// </summary>
public sealed class KvBlocksExhaustedException : MixAttentionException
{
    /// <summary>Creates the exception.</summary>
    public KvBlocksExhaustedException(int sequence, int length, int newTokens, int neededBlocks, int freeBlocks, int totalBlocks)
        : base($"sequence {sequence}: {length} tokens + {newTokens} new need {neededBlocks} more KV block(s) but {freeBlocks} of {totalBlocks} are free " +
               "(this step's sequences together); remove a sequence to free its blocks, or open the session with a larger SessionConfig.KvBlocks.")
    {
        Sequence = sequence;
        NeededBlocks = neededBlocks;
        FreeBlocks = freeBlocks;
    }

    /// <summary>The first sequence of the step that could not get its blocks.</summary>
    public int Sequence { get; }
    /// <summary>Blocks the step needed beyond those its sequences hold.</summary>
    public int NeededBlocks { get; }
    /// <summary>Blocks free when the step was refused.</summary>
    public int FreeBlocks { get; }
}
