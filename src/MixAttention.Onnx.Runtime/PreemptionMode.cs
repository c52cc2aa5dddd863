namespace MixAttention.Onnx.Runtime;

/// <summary>
/// How <see cref="ContinuousBatchingGenerator.Run"/> frees a running request's caches when a decode step of a session
/// with paged caches finds too few free blocks (docs/runtime.md, "Paged caches").
/// </summary>
public enum PreemptionMode
{
    /// <summary>
    /// Free its blocks and batch slot and keep its tokens; on resume, prefill its prompt and generated tokens again.
    /// Costs compute (<see cref="GenerationStats.RecomputedTokens"/>), no memory.
    /// </summary>
    Recompute,

    /// <summary>
    /// Copy what it holds in the caches (its pool blocks and its slot's sliding rings) to host memory, free its blocks
    /// and slot, and copy them back on resume: no token is computed twice. Costs host memory
    /// (<see cref="GenerationStats.SwappedBytes"/>); on CUDA each swap is a device ↔ host copy.
    /// </summary>
    Swap,
}
