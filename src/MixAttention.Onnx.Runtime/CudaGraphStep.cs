using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MixAttention.Onnx.Plan;
using MixAttention.Onnx.Interop;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// The fixed buffers of a CUDA-graph decode step (<see cref="ModelOptions.CudaGraphDecode"/>): every step runs all
/// <c>MaxBatch</c> rows with one token each, over device-resident <c>input_ids [B, 1]</c>, <c>position_ids [B, 1]</c>,
/// <c>past_lengths [B]</c>, <c>new_lengths [B]</c>, for paged caches <c>block_table [B, max_blocks]</c>, and
/// <c>logits [B, 1, V]</c> and the whole caches, all bound once to one <see cref="OrtIoBinding"/>, so their addresses and
/// shapes never change between replays.
/// <para>
/// The small inputs are views into one device block, staged in one host block of the same layout, so a step
/// makes one host → device copy, one replay (ORT captures the graph on its first runs with this graph id) and one
/// device → host copy of the logits. Both host blocks are page-locked when the CUDA runtime is at hand
/// (<c>cudaHostAlloc</c>): copies from and to them are DMA transfers that need no staging and no extra device
/// synchronisation (measured on an H200 at 16 × 32K vocab: the pageable path with one copy and a device sync per
/// input cost ~0.8 ms per step).
/// </para>
/// <para>
/// Copies go through <see cref="OrtEnv.CopyTensors"/> when the environment has a data transfer for CUDA; ORT's CUDA
/// provider appended to session options does not register one in the environment, so the first failure switches to
/// <c>cudaMemcpy</c> of the CUDA runtime that the provider already loaded (<see cref="Transfer"/> says which).
/// </para>
/// </summary>
internal sealed class CudaGraphStep : IDisposable
{
    private const int Align = 256;
    private readonly OrtIoBinding _binding;
    private readonly RunOptions _runOptions = new();
    private readonly List<OrtValue> _owned = new();
    private readonly HostBlock _hostInputs, _hostLogitsMemory;
    private readonly OrtValue _hostInputsValue, _deviceInputs, _deviceLogits, _hostLogits;
    private readonly int _idsOffset, _posOffset, _pastOffset, _newOffset, _tableOffset;
    private readonly KvBlockPool? _pool; // paged caches: its table is copied into the input block every step
    private readonly bool _ids64, _pos64, _hasPositions;

    public CudaGraphStep(MixAttentionModel model, KvCacheSet caches, int maxBatch, int vocab, TensorElementType positionType, int graphId)
    {
        var plan = model.Plan!;
        MaxBatch = maxBatch;
        GraphId = graphId;
        _runOptions.AddRunConfigEntry("gpu_graph_id", graphId.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var allocator = model.DeviceAllocator()!;
        _ids64 = model.InputIdsType == TensorElementType.Int64;
        _hasPositions = plan.PositionIds is not null;
        _pos64 = positionType == TensorElementType.Int64;
        // Layout of the input block: ids, positions, past_lengths, new_lengths, each 256-byte aligned.
        int size = 0;
        int Place(int bytes) { int at = size; size += (bytes + Align - 1) / Align * Align; return at; }
        _idsOffset = Place(maxBatch * (_ids64 ? 8 : 4));
        _posOffset = _hasPositions ? Place(maxBatch * (_pos64 ? 8 : 4)) : -1;
        _pastOffset = Place(maxBatch * 4);
        _newOffset = Place(maxBatch * 4);
        // Paged caches: the whole block table, rewritten every step (blocks are taken between steps).
        _pool = caches.Pool;
        _tableOffset = _pool is { } pool ? Place(checked(maxBatch * pool.MaxBlocksPerSequence * 4)) : -1;
        long logitsBytes = (long)maxBatch * vocab * (ElementTypes.Size((int)model.LogitsType) ?? 4);
        _binding = model.OrtSession.CreateIoBinding();
        try
        {
            OrtValue Own(OrtValue v) { _owned.Add(v); return v; }
            _hostInputs = new HostBlock(size);
            _hostLogitsMemory = new HostBlock(logitsBytes);
            _hostInputsValue = Own(OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, TensorElementType.UInt8, new long[] { size }, _hostInputs.Address, size));
            _deviceInputs = Own(OrtValue.CreateAllocatedTensorValue(allocator, TensorElementType.UInt8, new long[] { size }));
            IntPtr device = Address(_deviceInputs, out _);
            void Input(string name, int offset, TensorElementType type, long[] shape, int elementBytes) =>
                _binding.BindInput(name, Own(OrtValue.CreateTensorValueWithData(allocator.Info, type, shape, device + offset, maxBatch * elementBytes)));
            long[] bs = { maxBatch, 1 };
            Input(plan.InputIds, _idsOffset, model.InputIdsType, bs, _ids64 ? 8 : 4);
            if (plan.PositionIds is { } pos) Input(pos, _posOffset, _pos64 ? TensorElementType.Int64 : TensorElementType.Int32, bs, _pos64 ? 8 : 4);
            Input(plan.PastLengths!, _pastOffset, TensorElementType.Int32, new long[] { maxBatch }, 4);
            Input(plan.NewLengths!, _newOffset, TensorElementType.Int32, new long[] { maxBatch }, 4);
            if (_pool is { } paged)
                _binding.BindInput(plan.BlockTable!, Own(OrtValue.CreateTensorValueWithData(allocator.Info, TensorElementType.Int32,
                    new long[] { maxBatch, paged.MaxBlocksPerSequence }, device + _tableOffset, (long)maxBatch * paged.MaxBlocksPerSequence * 4)));
            caches.Bind(_binding, 0, maxBatch);
            long[] logitsShape = { maxBatch, 1, vocab };
            _deviceLogits = Own(OrtValue.CreateAllocatedTensorValue(allocator, model.LogitsType, logitsShape));
            _hostLogits = Own(OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, model.LogitsType, logitsShape, _hostLogitsMemory.Address, logitsBytes));
            _binding.BindOutput(plan.Logits, _deviceLogits);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Rows every step runs (the session's MaxBatch).</summary>
    public int MaxBatch { get; }
    /// <summary>The <c>gpu_graph_id</c> of this session's decode graph.</summary>
    public int GraphId { get; }
    /// <summary>How host ↔ device copies are made: "OrtEnv.CopyTensors" or "cudaMemcpy" (+ " (page-locked)" when the host blocks are); null before the first step.</summary>
    public string? Transfer { get; private set; }
    /// <summary>Steps run.</summary>
    public long Steps { get; private set; }
    /// <summary>Host time spent so far in the steps' phases: the input copy to the device, the replay (ORT's run: launch and wait for the GPU), the logits copy back.</summary>
    public CudaGraphStepTime Time => new(Elapsed(_inputTicks), Elapsed(_replayTicks), Elapsed(_logitsTicks));
    private long _inputTicks, _replayTicks, _logitsTicks;
    private static TimeSpan Elapsed(long ticks) => TimeSpan.FromSeconds((double)ticks / System.Diagnostics.Stopwatch.Frequency);

    /// <summary>
    /// One decode step over all rows: <paramref name="ids"/>, <paramref name="past"/>, <paramref name="news"/> are
    /// <c>MaxBatch</c> long (rows without a token: <c>news = 0</c>); positions are <c>past</c>; paged caches: the pool's
    /// block table as it is now, every row. Returns the logits
    /// <c>[MaxBatch, 1, V]</c>, valid until the next step: copied to the host when <paramref name="copyLogits"/>, else
    /// the device buffer the graph wrote.
    /// </summary>
    public unsafe OrtValue Run(InferenceSession session, long[] ids, int[] past, int[] news, bool copyLogits = true)
    {
        byte* host = (byte*)_hostInputs.Address;
        if (_pool is { } pool) pool.CopyTableRows(0, MaxBatch, new Span<int>(host + _tableOffset, MaxBatch * pool.MaxBlocksPerSequence));
        for (int r = 0; r < MaxBatch; r++)
        {
            if (_ids64) ((long*)(host + _idsOffset))[r] = ids[r];
            else ((int*)(host + _idsOffset))[r] = checked((int)ids[r]);
            if (_hasPositions)
            {
                if (_pos64) ((long*)(host + _posOffset))[r] = past[r];
                else ((int*)(host + _posOffset))[r] = past[r];
            }
            ((int*)(host + _pastOffset))[r] = past[r];
            ((int*)(host + _newOffset))[r] = news[r];
        }
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        Copy(_hostInputsValue, _deviceInputs, _hostInputs, toDevice: true);
        long t1 = System.Diagnostics.Stopwatch.GetTimestamp();
        session.RunWithBinding(_runOptions, _binding);
        long t2 = System.Diagnostics.Stopwatch.GetTimestamp();
        _inputTicks += t1 - t0;
        _replayTicks += t2 - t1;
        Steps++;
        if (!copyLogits) return _deviceLogits;
        Copy(_deviceLogits, _hostLogits, _hostLogitsMemory, toDevice: false);
        _logitsTicks += System.Diagnostics.Stopwatch.GetTimestamp() - t2;
        return _hostLogits;
    }

    private void Copy(OrtValue src, OrtValue dst, HostBlock host, bool toDevice)
    {
        if (Transfer is null or "OrtEnv.CopyTensors")
        {
            try
            {
                OrtEnv.Instance().CopyTensors(new[] { src }, new[] { dst }, null);
                Transfer = "OrtEnv.CopyTensors";
                return;
            }
            catch (OnnxRuntimeException) when (Transfer is null)
            {
                Transfer = host.PageLocked ? "cudaMemcpy (page-locked)" : "cudaMemcpy";
            }
        }
        IntPtr device = Address(toDevice ? dst : src, out long bytes);
        CudaRuntime.Copy(toDevice ? device : host.Address, toDevice ? host.Address : device, bytes, toDevice, host.PageLocked);
    }

    private static unsafe IntPtr Address(OrtValue value, out long bytes)
    {
        var span = value.GetTensorMutableRawData(); // only the address and length: device memory is never dereferenced here
        bytes = span.Length;
        return (IntPtr)Unsafe.AsPointer(ref MemoryMarshal.GetReference(span));
    }

    public void Dispose()
    {
        _binding?.Dispose();
        foreach (var v in _owned) v.Dispose();
        _owned.Clear();
        _runOptions.Dispose();
        _hostInputs?.Dispose();
        _hostLogitsMemory?.Dispose();
    }

    /// <summary>Host memory of a step: page-locked (<c>cudaHostAlloc</c>) when the CUDA runtime can be loaded, else ordinary.</summary>
    private sealed class HostBlock : IDisposable
    {
        public HostBlock(long bytes)
        {
            Bytes = Math.Max(bytes, 1);
            Address = CudaRuntime.TryHostAlloc(Bytes);
            PageLocked = Address != IntPtr.Zero;
            if (!PageLocked) unsafe { Address = (IntPtr)NativeMemory.AlignedAlloc((nuint)Bytes, Align); }
        }

        public IntPtr Address { get; private set; }
        public long Bytes { get; }
        public bool PageLocked { get; }

        public void Dispose()
        {
            if (Address == IntPtr.Zero) return;
            if (PageLocked) CudaRuntime.FreeHost(Address);
            else unsafe { NativeMemory.AlignedFree((void*)Address); }
            Address = IntPtr.Zero;
        }
    }
}
