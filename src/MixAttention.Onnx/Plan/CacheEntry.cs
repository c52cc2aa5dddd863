namespace MixAttention.Onnx.Plan;

/// <summary>One cache a converted model keeps between steps: who owns it, its kind and size, who reads it.</summary>
public sealed record CacheEntry
{
    /// <summary>The layer that owns (writes) the cache.</summary>
    public required int Owner { get; init; }
    /// <summary>Sliding window of the owner; 0 = global.</summary>
    public required int Window { get; init; }
    /// <summary>How the capacity is chosen.</summary>
    public required CapacityRule Capacity { get; init; }
    /// <summary>KV heads.</summary>
    public required int KvNumHeads { get; init; }
    /// <summary>Head size.</summary>
    public required int HeadSize { get; init; }
    /// <summary>Element type name of the cache tensors: fp32, fp16, bf16, or the quantized int8 and fp8e4m3 (<see cref="ElementTypes"/>).</summary>
    public required string DType { get; init; }
    /// <summary>
    /// The element type the graph declares for the cache tensors when it is not <see cref="DType"/>'s own: <c>uint8</c>
    /// for fp8e4m3 caches of the ops backend (the op's alias: the same E4M3FN bytes, because ORT's C# API cannot type
    /// float8e4m3fn tensors). Null = <see cref="DType"/>.
    /// </summary>
    public string? Storage { get; init; }
    /// <summary>The element type of the cache tensors in the graph: <see cref="Storage"/>, else <see cref="DType"/>.</summary>
    public string StorageDType => Storage ?? DType;
    /// <summary>The scales of a quantized cache (int8, fp8e4m3); null for a float cache.</summary>
    public KvScaleTensors? Scales { get; init; }
    /// <summary>Graph input with the past keys.</summary>
    public required string PastKey { get; init; }
    /// <summary>Graph input with the past values.</summary>
    public required string PastValue { get; init; }
    /// <summary>Graph output with the updated keys.</summary>
    public required string PresentKey { get; init; }
    /// <summary>Graph output with the updated values.</summary>
    public required string PresentValue { get; init; }
    /// <summary>Other layers that read this cache.</summary>
    public required IReadOnlyList<int> Readers { get; init; }
    /// <summary>True for an int8 or fp8 cache (stored as integers or fp8 codes, read through <see cref="Scales"/>).</summary>
    public bool IsQuantized => ElementTypes.IsQuantizedDType(DType);
    /// <summary>
    /// Paged global cache (plan version 3, <c>convert --paged</c>): rows per block of the pool
    /// <c>[num_blocks, Hkv, BlockSize, D]</c> the cache tensors are, read through the plan's <see cref="CachePlan.BlockTable"/>
    /// input (docs/ops.md, "Paged caches"). Null: a contiguous <c>[B, Hkv, C, D]</c> cache.
    /// </summary>
    public int? BlockSize { get; init; }
    /// <summary>True for a paged global cache (<see cref="BlockSize"/> set).</summary>
    public bool IsPaged => BlockSize is not null;
    /// <summary>True for a sliding (ring) cache.</summary>
    public bool IsSliding => Window > 0;
}
