namespace MixAttention.Onnx.Runtime;

/// <summary>Totals of a <see cref="ContinuousBatchingGenerator.Run"/>.</summary>
/// <param name="PromptTokens">Prompt tokens of the requests (those in <see cref="ReusedTokens"/> included).</param>
/// <param name="GeneratedTokens">Tokens generated.</param>
/// <param name="PrefillTime">Model time of prefills (resumes after preemption included).</param>
/// <param name="DecodeTime">Model time of decode steps.</param>
/// <param name="DecodeSteps">Batched decode calls.</param>
public sealed record GenerationStats(int PromptTokens, int GeneratedTokens, TimeSpan PrefillTime, TimeSpan DecodeTime, int DecodeSteps)
{
    /// <summary>Generated tokens per second of model time (prefill + decode).</summary>
    public double TokensPerSecond => (PrefillTime + DecodeTime).TotalSeconds is var s && s > 0 ? GeneratedTokens / s : 0;

    /// <summary>
    /// Paged caches: times a running request was preempted (its blocks freed; recomputed or swapped back on resume, as
    /// <see cref="ContinuousBatchingGenerator.Preemption"/> says) because a decode step needed more blocks than were free.
    /// </summary>
    public int Preemptions { get; init; }

    /// <summary>Paged caches, <see cref="PreemptionMode.Swap"/>: preemptions whose caches went to host memory and came back.</summary>
    public int SwappedOut { get; init; }

    /// <summary>Paged caches, <see cref="PreemptionMode.Swap"/>: bytes copied to host memory by those preemptions.</summary>
    public long SwappedBytes { get; init; }

    /// <summary>Paged caches: tokens prefilled again to resume preempted requests (prompt and tokens generated before).</summary>
    public int RecomputedTokens { get; init; }

    /// <summary>
    /// Paged caches: tokens that were not prefilled because their blocks were already cached — a prompt prefix shared with a
    /// running request or a retained prefix (automatic prefix matching; on resume, also a preempted request's own tokens).
    /// </summary>
    public int ReusedTokens { get; init; }

    /// <summary>Most requests decoded together in one step: the concurrency the session's slots (and, paged, its blocks) allowed.</summary>
    public int MaxRunning { get; init; }

    /// <summary>Paged caches: most pool blocks held at once by the running requests and retained prefixes.</summary>
    public int MaxUsedBlocks { get; init; }

    /// <summary>Paged caches: most pool blocks held by more than one sequence at once (shared prefixes, each stored once).</summary>
    public int MaxSharedBlocks { get; init; }
}
