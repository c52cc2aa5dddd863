using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// The caches of a converted model, allocated once (owners only) and bound in place: each step binds the same
/// memory as the owner's past input and present output, so the ops write only the new rows and nothing is
/// copied between steps. A step over slots <c>[first, first + rows)</c> binds <see cref="OrtValue"/> views of
/// that contiguous region (made once per range and kept).
/// <para>
/// Owned by its session: disposing the session disposes it. Disposing it directly makes the session's next call fail
/// with <see cref="ObjectDisposedException"/> (never a step over freed memory).
/// </para>
/// </summary>
public sealed class KvCacheSet : IDisposable
{
    /// <summary>Size of the largest cache set allocated without an explicit <see cref="SessionConfig.MaxCacheBytes"/> on GPU (64 GiB).</summary>
    public const long DefaultDeviceLimitBytes = 64L << 30;

    private readonly List<OwnerCache> _caches = new();
    private readonly Dictionary<(int First, int Rows), OrtValue[]> _views = new();
    private bool _disposed;

    internal KvCacheSet(CachePlan plan, SessionConfig config, ExecutionDevice device, OrtAllocator? deviceAllocator, OrtMemoryInfo memoryInfo)
    {
        Plan = plan;
        Config = config;
        // Sizes first, in 128-bit arithmetic (no overflow for any int config), and nothing allocated when they are absurd.
        var sizes = new List<(CacheEntry Entry, int Capacity, TensorElementType Type, int Size, long Bytes)>();
        Int128 total = 0;
        // Paged global caches: one block allocator for all of them (one block_table input addresses every pool).
        var blockSizes = plan.Caches.Where(c => c.IsPaged).Select(c => c.BlockSize!.Value).Distinct().ToList();
        if (blockSizes.Count > 1)
            throw new MixAttentionException($"the paged caches of this model have different block sizes ({string.Join(", ", blockSizes)}); one block table cannot address them. Convert the model again with one --block-size.");
        if (blockSizes.Count == 1)
        {
            if (plan.BlockTable is null)
                throw new MixAttentionException("the cache plan has paged caches but no block_table input; the cache plan is damaged: convert the model again.");
            int bs = blockSizes[0];
            int maxBlocks = (int)(((long)config.MaxLength + bs - 1) / bs);
            long blocks = config.KvBlocks ?? (long)config.MaxBatch * maxBlocks;
            if (blocks > int.MaxValue)
                throw new MixAttentionException($"the paged caches would need {blocks:N0} blocks (MaxBatch {config.MaxBatch} × {maxBlocks} blocks of {bs} for MaxLength {config.MaxLength}); set SessionConfig.KvBlocks.");
            // A model without new_lengths writes every row of a step (a filler for rows not in it): a scratch block takes
            // the writes of rows without a block at their position.
            _pool = new KvBlockPool((int)blocks, bs, maxBlocks, config.MaxBatch, scratch: plan.NewLengths is null);
        }
        foreach (var entry in plan.Caches)
        {
            if (entry.KvNumHeads < 1 || entry.HeadSize < 1 || entry.Window < 0)
                throw new MixAttentionException($"the cache of layer {entry.Owner} has {entry.KvNumHeads} KV heads of size {entry.HeadSize} and window {entry.Window}; all must be positive (window >= 0). The cache plan is damaged: convert the model again.");
            long capacity = CacheCapacity.Of(entry, config.MaxLength, config.PrefillChunk)
                ?? throw new MixAttentionException($"cache of layer {entry.Owner} grows each step (capacity rule 'growing'); it cannot be preallocated — run the model with the plain driver.");
            // A ring never needs more positions than a sequence of this session can reach: one whose window is longer
            // than MaxLength is bounded by MaxLength + PrefillChunk - 1, and sequences then stop at MaxLength (LengthLimit),
            // so it never wraps. A huge window in the plan cannot make a huge ring.
            long reach = (long)config.MaxLength + config.PrefillChunk - 1;
            if (entry.Capacity == CapacityRule.Window && capacity > reach)
            {
                capacity = reach;
                _ringLimit = config.MaxLength;
            }
            if (capacity < 1 || capacity > int.MaxValue)
                throw new MixAttentionException($"the cache of layer {entry.Owner} would hold {capacity} positions (window {entry.Window}, PrefillChunk {config.PrefillChunk}, MaxLength {config.MaxLength}); it must be between 1 and {int.MaxValue}. Lower PrefillChunk or MaxLength.");
            var (type, size) = ElementTypeOf(entry.StorageDType, $"cache of layer {entry.Owner}");
            Int128 bytes = entry.IsPaged
                ? (Int128)_pool!.PhysicalBlocks * entry.KvNumHeads * entry.BlockSize!.Value * entry.HeadSize * size
                : (Int128)config.MaxBatch * entry.KvNumHeads * capacity * entry.HeadSize * size;
            if (bytes <= 0)
                throw new MixAttentionException($"the cache of layer {entry.Owner} would need {bytes:N0} bytes; the cache plan is damaged: convert the model again.");
            total += 2 * bytes;
            sizes.Add((entry, (int)capacity, type, size, bytes > long.MaxValue ? long.MaxValue : (long)bytes));
        }
        long limit = config.MaxCacheBytes ?? (device == ExecutionDevice.Cpu ? AvailableMemory.HostBytes()
            : Math.Min(DefaultDeviceLimitBytes, AvailableMemory.DeviceFreeBytes(memoryInfo.Id) ?? long.MaxValue));
        if (total > limit)
            throw new MixAttentionException(
                $"the KV caches of this session would need {total:N0} bytes ({Human(total)}: {sizes.Count} owner caches × K and V, MaxBatch {config.MaxBatch}, MaxLength {config.MaxLength}, PrefillChunk {config.PrefillChunk}" +
                (_pool is { } p ? $", {p.TotalBlocks} blocks of {p.BlockSize} positions per paged cache" : "") + "), " +
                $"more than the limit of {limit:N0} bytes ({Human(limit)}, {(config.MaxCacheBytes is null ? (device == ExecutionDevice.Cpu ? "the memory available on this machine now" : "the GPU's free memory, at most the 64 GiB default") : "SessionConfig.MaxCacheBytes")}). " +
                "Lower MaxBatch or MaxLength" + (_pool is null ? "" : " or SessionConfig.KvBlocks") + ", or raise SessionConfig.MaxCacheBytes.");
        try
        {
            foreach (var (entry, capacity, type, size, bytes) in sizes)
            {
                DeviceBuffer Alloc() => device == ExecutionDevice.Cpu
                    ? DeviceBuffer.AllocateHost(bytes, config.PoisonCaches && type == TensorElementType.Float ? float.NaN : null)
                    : DeviceBuffer.AllocateDevice(deviceAllocator!, memoryInfo, bytes);
                var k = Alloc();
                DeviceBuffer v;
                try { v = Alloc(); }
                catch { k.Dispose(); throw; }
                _caches.Add(new OwnerCache(this, entry, capacity, type, size, config.MaxBatch, k, v, entry.IsPaged ? _pool!.PhysicalBlocks : null));
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private static string Human(Int128 bytes)
    {
        double b = (double)bytes;
        string[] units = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
        int u = 0;
        while (b >= 1024 && u < units.Length - 1) { b /= 1024; u++; }
        return $"{b:0.#} {units[u]}";
    }

    private readonly KvBlockPool? _pool;

    /// <summary>The block allocator of the paged caches; null when no cache is paged.</summary>
    internal KvBlockPool? Pool => _pool;

    /// <summary>Positions per block of the paged global caches (a model converted with <c>--paged</c>); null when no cache is paged.</summary>
    public int? BlockSize => _pool?.BlockSize;
    /// <summary>Blocks in each paged cache's pool that sequences can hold (0 when no cache is paged).</summary>
    public int TotalBlocks => _pool?.TotalBlocks ?? 0;
    /// <summary>
    /// Blocks each pool holds beyond <see cref="TotalBlocks"/> that no sequence gets: 1 for a model whose attention writes
    /// every row of a step (the filler rows' scratch block, docs/runtime.md "Paged caches"), else 0.
    /// </summary>
    public int ScratchBlocks => _pool is { } pool ? pool.PhysicalBlocks - pool.TotalBlocks : 0;
    /// <summary>Pool blocks no sequence holds (0 when no cache is paged).</summary>
    public int FreeBlocks => _pool?.FreeBlocks ?? 0;
    /// <summary>Pool blocks the live sequences hold: their actual lengths rounded up to blocks (0 when no cache is paged).</summary>
    public int UsedBlocks => _pool?.UsedBlocks ?? 0;
    /// <summary>Pool blocks held by more than one sequence (prefixes shared by <see cref="InPlaceCacheSession.ForkSequence"/>, stored once).</summary>
    public int SharedBlocks => _pool?.SharedBlocks ?? 0;
    /// <summary>Bytes one block takes across all paged caches, K and V (0 when no cache is paged).</summary>
    public long BytesPerBlock => _caches.Sum(c => 2 * c.BlockBytes);
    /// <summary>Blocks a sequence of <paramref name="positions"/> positions holds in the paged caches (0 when no cache is paged).</summary>
    public int BlocksFor(int positions) => _pool?.BlocksFor(positions) ?? 0;

    /// <summary>True once disposed.</summary>
    public bool IsDisposed => _disposed;

    internal void ThrowIfDisposed()
    {
        if (_disposed)
            throw new ObjectDisposedException(nameof(KvCacheSet), $"this {nameof(KvCacheSet)} was disposed (it belongs to its session: dispose the session, not its caches).");
    }

    /// <summary>The plan the caches follow.</summary>
    public CachePlan Plan { get; }
    /// <summary>Batch slots and lengths.</summary>
    public SessionConfig Config { get; }
    /// <summary>One cache per owner, in plan order.</summary>
    public IReadOnlyList<OwnerCache> Caches
    {
        get
        {
            ThrowIfDisposed();
            return _caches;
        }
    }

    /// <summary>Bytes allocated for all caches now (0 once disposed).</summary>
    public long AllocatedBytes => _disposed ? 0 : _caches.Sum(c => c.Bytes);

    /// <summary>Bytes one more batch slot costs.</summary>
    public long BytesPerSequence => _caches.Sum(c => 2 * c.SlotBytes);

    /// <summary>
    /// The longest a sequence may grow: the smallest global cache capacity, or MaxLength when a ring was bounded below
    /// its window (it must not wrap); null when every owner is a full ring (sequences may grow without end).
    /// </summary>
    public int? GlobalCapacity
    {
        get
        {
            var global = _caches.Where(c => !c.Entry.IsSliding).Select(c => (int?)c.Capacity).Min();
            return _ringLimit is { } r && (global is null || r < global) ? r : global;
        }
    }

    private readonly int? _ringLimit;

    /// <summary>
    /// KV bytes per sequence of <paramref name="length"/> tokens the unconverted model needs: every layer keeps a
    /// full cache, with the heads and head size of the cache it reads here.
    /// </summary>
    public long UnconvertedBytesPerSequence(int length)
    {
        // The unconverted model keeps its caches in its own float type, whatever this conversion stores.
        int? modelSize = Plan.ModelDType is { } m ? ElementTypes.SizeOfDType(m) : null;
        long total = 0;
        for (int layer = 0; layer < Plan.LayerCount; layer++)
        {
            var src = _caches.First(c => c.Entry.Owner == Plan.KvSource[layer]);
            total += 2L * src.Entry.KvNumHeads * length * src.Entry.HeadSize * (modelSize ?? src.ElementSize);
        }
        return total;
    }

    /// <summary>Bytes allocated now per cache element type (fp32, fp16, bf16, int8, fp8e4m3), as the plan names them.</summary>
    public IReadOnlyDictionary<string, long> AllocatedBytesByDType =>
        _disposed ? new Dictionary<string, long>() : _caches.GroupBy(c => c.Entry.DType).ToDictionary(g => g.Key, g => g.Sum(c => c.Bytes));

    /// <summary>The memory report.</summary>
    public SessionKvMemory Memory()
    {
        ThrowIfDisposed();
        return new(AllocatedBytes, BytesPerSequence,
            UnconvertedBytesPerSequence(Config.MaxLength) * Config.MaxBatch, UnconvertedBytesPerSequence(Config.MaxLength), Config.MaxLength)
        {
            AllocatedBytesByDType = AllocatedBytesByDType,
        };
    }

    /// <summary>Binds slots <c>[first, first + rows)</c> of every cache as both past input and present output.</summary>
    internal void Bind(OrtIoBinding binding, int first, int rows)
    {
        ThrowIfDisposed();
        if (!_views.TryGetValue((first, rows), out var views))
        {
            views = new OrtValue[_caches.Count * 2];
            for (int i = 0; i < _caches.Count; i++)
            {
                var c = _caches[i];
                // A paged cache binds its whole pool (the block table picks the rows); a contiguous one its slots' rows.
                var (offset, length) = c.PoolBlocks is { } n ? (0L, n * c.BlockBytes) : (first * c.SlotBytes, rows * c.SlotBytes);
                views[2 * i] = c.Key.CreateView(c.ElementType, c.Shape(rows), offset, length);
                views[2 * i + 1] = c.Value.CreateView(c.ElementType, c.Shape(rows), offset, length);
            }
            _views[(first, rows)] = views;
        }
        for (int i = 0; i < _caches.Count; i++)
        {
            var e = _caches[i].Entry;
            binding.BindInput(e.PastKey, views[2 * i]);
            binding.BindOutput(e.PresentKey, views[2 * i]);
            binding.BindInput(e.PastValue, views[2 * i + 1]);
            binding.BindOutput(e.PresentValue, views[2 * i + 1]);
        }
    }

    internal static (TensorElementType Type, int Size) ElementTypeOf(string dtype, string what) =>
        // uint8 only as the storage of fp8 caches (CacheEntry.Storage; the plan's validation allows nothing else).
        (dtype == "uint8" ? (int)TensorElementType.UInt8 : ElementTypes.FromDTypeName(dtype)) is { } type
            ? ((TensorElementType)type, ElementTypes.Size(type)!.Value)
            : throw new MixAttentionException($"the {what} has dtype '{dtype}', which this runtime does not support (it allocates fp32, fp16, bf16, int8 and fp8e4m3 caches).");

    /// <summary>Disposes the views, then the memory.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var v in _views.Values.SelectMany(x => x)) v.Dispose();
        _views.Clear();
        for (int i = _caches.Count - 1; i >= 0; i--)
        {
            _caches[i].Value.Dispose();
            _caches[i].Key.Dispose();
        }
    }
}
