using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MixAttention.Onnx.Lowering;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// One owner's cache: a key and a value tensor <c>[MaxBatch, Hkv, C, D]</c> (batch outermost, so a slot's rows are
/// contiguous). Sliding owners get a ring of <c>C = W</c> (+ chunk − 1 when other layers read it), global
/// owners <c>C = MaxLength</c>. Readers never get memory: they read their owner's cache (the plan's <c>kv_source</c>).
/// </summary>
public sealed class OwnerCache
{
    internal OwnerCache(CacheEntry entry, int capacity, TensorElementType type, int elementSize, int maxBatch, DeviceBuffer key, DeviceBuffer value)
    {
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
    /// <summary>Address of the key tensor (host or device); constant for the cache's lifetime.</summary>
    public IntPtr KeyAddress => Key.Pointer;
    /// <summary>Address of the value tensor.</summary>
    public IntPtr ValueAddress => Value.Pointer;

    internal DeviceBuffer Key { get; }
    internal DeviceBuffer Value { get; }

    internal long[] Shape(int rows) => new long[] { rows, Entry.KvNumHeads, Capacity, Entry.HeadSize };
}

/// <summary>
/// The caches of a converted model, allocated once (owners only) and bound in place: each step binds the same
/// memory as the owner's past input and present output, so the ops write only the new rows and nothing is
/// copied between steps. A step over slots <c>[first, first + rows)</c> binds <see cref="OrtValue"/> views of
/// that contiguous region (made once per range and kept).
/// </summary>
public sealed class KvCacheSet : IDisposable
{
    private readonly List<OwnerCache> _caches = new();
    private readonly Dictionary<(int First, int Rows), OrtValue[]> _views = new();
    private bool _disposed;

    internal KvCacheSet(CachePlan plan, SessionConfig config, ExecutionDevice device, OrtAllocator? deviceAllocator, OrtMemoryInfo memoryInfo)
    {
        Plan = plan;
        Config = config;
        try
        {
            foreach (var entry in plan.Caches)
            {
                int capacity = entry.Capacity switch
                {
                    CapacityRule.Window => entry.Window + (entry.Readers.Count > 0 ? config.PrefillChunk - 1 : 0),
                    CapacityRule.MaxLength => config.MaxLength,
                    _ => throw new MixAttentionException($"cache of layer {entry.Owner} grows each step (capacity rule 'growing'); it cannot be preallocated — run the model with the plain driver."),
                };
                var (type, size) = ElementTypeOf(entry.DType);
                long bytes = (long)config.MaxBatch * entry.KvNumHeads * capacity * entry.HeadSize * size;
                DeviceBuffer Alloc() => device == ExecutionDevice.Cpu
                    ? DeviceBuffer.AllocateHost(bytes, config.PoisonCaches && type == TensorElementType.Float ? float.NaN : null)
                    : DeviceBuffer.AllocateDevice(deviceAllocator!, memoryInfo, bytes);
                var k = Alloc();
                DeviceBuffer v;
                try { v = Alloc(); }
                catch { k.Dispose(); throw; }
                _caches.Add(new OwnerCache(entry, capacity, type, size, config.MaxBatch, k, v));
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The plan the caches follow.</summary>
    public CachePlan Plan { get; }
    /// <summary>Batch slots and lengths.</summary>
    public SessionConfig Config { get; }
    /// <summary>One cache per owner, in plan order.</summary>
    public IReadOnlyList<OwnerCache> Caches => _caches;

    /// <summary>Bytes allocated for all caches now.</summary>
    public long AllocatedBytes => _caches.Sum(c => c.Bytes);

    /// <summary>Bytes one more batch slot costs.</summary>
    public long BytesPerSequence => _caches.Sum(c => 2 * c.SlotBytes);

    /// <summary>The smallest global cache capacity, or null when every owner is a ring.</summary>
    public int? GlobalCapacity => _caches.Where(c => !c.Entry.IsSliding).Select(c => (int?)c.Capacity).Min();

    /// <summary>
    /// KV bytes per sequence of <paramref name="length"/> tokens the unconverted model needs: every layer keeps a
    /// full cache, with the heads and head size of the cache it reads here.
    /// </summary>
    public long UnconvertedBytesPerSequence(int length)
    {
        long total = 0;
        for (int layer = 0; layer < Plan.LayerCount; layer++)
        {
            var src = _caches.First(c => c.Entry.Owner == Plan.KvSource[layer]);
            total += 2L * src.Entry.KvNumHeads * length * src.Entry.HeadSize * src.ElementSize;
        }
        return total;
    }

    /// <summary>The memory report.</summary>
    public KvMemory Memory() => new(AllocatedBytes, BytesPerSequence,
        UnconvertedBytesPerSequence(Config.MaxLength) * Config.MaxBatch, UnconvertedBytesPerSequence(Config.MaxLength), Config.MaxLength);

    /// <summary>Binds slots <c>[first, first + rows)</c> of every cache as both past input and present output.</summary>
    internal void Bind(OrtIoBinding binding, int first, int rows)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_views.TryGetValue((first, rows), out var views))
        {
            views = new OrtValue[_caches.Count * 2];
            for (int i = 0; i < _caches.Count; i++)
            {
                var c = _caches[i];
                views[2 * i] = c.Key.CreateView(c.ElementType, c.Shape(rows), first * c.SlotBytes, rows * c.SlotBytes);
                views[2 * i + 1] = c.Value.CreateView(c.ElementType, c.Shape(rows), first * c.SlotBytes, rows * c.SlotBytes);
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

    internal static (TensorElementType Type, int Size) ElementTypeOf(string dtype) => dtype switch
    {
        "fp32" or "float32" or "float" => (TensorElementType.Float, 4),
        "fp16" or "float16" => (TensorElementType.Float16, 2),
        "bf16" or "bfloat16" => (TensorElementType.BFloat16, 2),
        _ => throw new MixAttentionException($"cache dtype '{dtype}' is not supported (fp32, fp16, bf16)."),
    };

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
