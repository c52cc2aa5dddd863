using Microsoft.ML.OnnxRuntime.Tensors;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// One owner's cache: a key and a value tensor <c>[MaxBatch, Hkv, C, D]</c> (batch outermost, so a slot's rows are
/// contiguous). Sliding owners get a ring of <c>C = W</c> (+ chunk − 1 when other layers read it), global
/// owners <c>C = MaxLength</c>. Readers never get memory: they read their owner's cache (the plan's <c>kv_source</c>).
/// </summary>
public sealed class OwnerCache
{
    private readonly KvCacheSet _set;

    internal OwnerCache(KvCacheSet set, CacheEntry entry, int capacity, TensorElementType type, int elementSize, int maxBatch, DeviceBuffer key, DeviceBuffer value)
    {
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
    /// <summary>Bytes of this cache (K and V, all slots).</summary>
    public long Bytes => 2 * SlotBytes * MaxBatch;
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

    internal long[] Shape(int rows) => new long[] { rows, Entry.KvNumHeads, Capacity, Entry.HeadSize };
}
