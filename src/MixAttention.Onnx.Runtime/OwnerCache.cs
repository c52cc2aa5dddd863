using Microsoft.ML.OnnxRuntime.Tensors;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// One owner's cache: a key and a value tensor <c>[MaxBatch, Hkv, C, D]</c> (batch outermost, so a slot's rows are
/// contiguous). Sliding owners get a ring of <c>C = W</c> (+ chunk − 1 when other layers read it), global
/// owners <c>C = MaxLength</c>; a paged global owner is a pool <c>[blocks, Hkv, block_size, D]</c> shared by the slots
/// through the session's block table (<see cref="KvCacheSet.BlockSize"/>). Readers never get memory: they read their owner's cache (the plan's <c>kv_source</c>).
/// </summary>
public sealed class OwnerCache
{
    private readonly KvCacheSet _set;

    internal OwnerCache(KvCacheSet set, CacheEntry entry, int capacity, TensorElementType type, int elementSize, int maxBatch, DeviceBuffer key, DeviceBuffer value,
        int? poolBlocks = null)
    {
        PoolBlocks = poolBlocks;
        _set = set;
        Entry = entry;
        Capacity = capacity;
        ElementType = type;
        ElementSize = elementSize;
        MaxBatch = maxBatch;
        Key = key;
        Value = value;
    }

    /// <summary>The plan's entry.</summary>
    public CacheEntry Entry { get; }
    /// <summary>Slots along the sequence axis (C).</summary>
    public int Capacity { get; }
    /// <summary>Element type.</summary>
    public TensorElementType ElementType { get; }
    /// <summary>Bytes per element.</summary>
    public int ElementSize { get; }
    /// <summary>Batch slots.</summary>
    public int MaxBatch { get; }
    /// <summary>Bytes of one slot of one tensor (K or V): Hkv·C·D·size.</summary>
    public long SlotBytes => (long)Entry.KvNumHeads * Capacity * Entry.HeadSize * ElementSize;
    /// <summary>Bytes of this cache (K and V, all slots; a paged cache: its whole pool).</summary>
    public long Bytes => PoolBlocks is { } n ? 2 * BlockBytes * n : 2 * SlotBytes * MaxBatch;
    /// <summary>Bytes of one block of one tensor (K or V) of a paged cache: Hkv·block_size·D·size; 0 for a contiguous cache.</summary>
    public long BlockBytes => Entry.BlockSize is { } bs ? (long)Entry.KvNumHeads * bs * Entry.HeadSize * ElementSize : 0;
    /// <summary>Blocks of a paged cache's pool; null for a contiguous cache.</summary>
    internal int? PoolBlocks { get; }
    /// <summary>Address of the key tensor (host or device); constant for the cache's lifetime. <see cref="ObjectDisposedException"/> once the set is disposed.</summary>
    public IntPtr KeyAddress
    {
        get
        {
            _set.ThrowIfDisposed();
            return Key.Pointer;
        }
    }

    /// <summary>Address of the value tensor. <see cref="ObjectDisposedException"/> once the set is disposed.</summary>
    public IntPtr ValueAddress
    {
        get
        {
            _set.ThrowIfDisposed();
            return Value.Pointer;
        }
    }

    internal DeviceBuffer Key { get; }
    internal DeviceBuffer Value { get; }

    /// <summary>
    /// The bound tensor's shape: <c>[rows, Hkv, C, D]</c>, or a paged cache's pool whatever the rows:
    /// <c>[blocks, Hkv, block_size, D]</c>, or token-major <c>[blocks, block_size, Hkv, D]</c> for ORT's PagedAttention
    /// (<see cref="CachePlan.TokenMajorPools"/>).
    /// </summary>
    internal long[] Shape(int rows) => PoolBlocks is not { } n
        ? new long[] { rows, Entry.KvNumHeads, Capacity, Entry.HeadSize }
        : _set.Plan.TokenMajorPools
            ? new long[] { n, Entry.BlockSize!.Value, Entry.KvNumHeads, Entry.HeadSize }
            : new long[] { n, Entry.KvNumHeads, Entry.BlockSize!.Value, Entry.HeadSize };
}
