using Microsoft.ML.OnnxRuntime;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// Decoding with a converted model: owner caches preallocated once (<see cref="KvCacheSet"/>) and bound in place,
/// batch slots handed to sequences (continuous batching: add and remove between steps, slots reused).
/// <para>
/// A decode step runs every requested sequence in one call over the contiguous slot range that holds them;
/// a prefill runs one sequence over its own slot (a <c>[1, Hkv, C, D]</c> view of the cache: batch is the
/// outermost axis, so a slot is contiguous), in chunks of <see cref="SessionConfig.PrefillChunk"/> tokens.
/// Rows of the range that are not part of the step are fed with <c>new_lengths = 0</c> when the model has that
/// input, else with one filler token at their next position (a free slot: position 0), which a later real
/// token overwrites before anything reads it.
/// </para>
/// <para>
/// Not thread-safe: one call at a time (a call that starts while another runs on another thread throws
/// <see cref="InvalidOperationException"/>). Sessions of one model may run on different threads at once.
/// </para>
/// </summary>
public sealed class InPlaceCacheSession : DecoderSession
{
    private readonly CachePlan _plan;
    private (int First, int Rows) _boundRange = (-1, -1);
    private CudaGraphStep? _graph;
    private OrtValue? _stepLogits; // the last decode step's logits when this session owns them (not the graph step's)
    private OrtValue? _blockTable; // paged caches: the bound block_table rows of the last step

    /// <summary>
    /// A session over <paramref name="model"/>'s cache plan (<see cref="MixAttentionModel.CreateSession"/> picks this
    /// driver for converted models). Holds a reference to the model until disposed.
    /// </summary>
    /// <exception cref="MixAttentionException">The model has no cache plan or its caches grow; the configuration is invalid or its caches too large.</exception>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public InPlaceCacheSession(MixAttentionModel model, SessionConfig? config = null) : base(model, config)
    {
        var plan = model.Plan ?? throw new MixAttentionException(
            $"{model.Path} has no cache plan ('{CachePlan.MetadataKey}' in its metadata), so it is not a converted MixAttention model and {nameof(InPlaceCacheSession)} cannot size its caches. " +
            $"Convert it with `mixattn convert`, or run it as it is with model.CreateSession() (a {nameof(GrowingCacheSession)}).");
        if (!model.IsInPlace)
            throw new MixAttentionException(
                $"{model.Path}: the caches of this conversion (backend '{plan.Backend}') grow each step and cannot be preallocated; run it with model.CreateSession() (a {nameof(GrowingCacheSession)}).");
        if (model.Options.CudaGraphDecode && CudaGraphDecodeBlocker(plan) is { } why)
            throw new MixAttentionException($"{model.Path}: {why}");
        _plan = plan;
        Open(new StepInputNames(plan.PositionIds, plan.AttentionMask, plan.PastLengths, plan.NewLengths));
        try
        {
            if (model.Options.CudaGraphDecode) RunOptions.AddRunConfigEntry("gpu_graph_id", "-1"); // prefill: never captured
            Caches = new KvCacheSet(plan, Config, model.Options.Device, model.DeviceAllocator(), model.CacheMemoryInfo);
        }
        catch
        {
            ReleaseOpened();
            throw;
        }
    }

    /// <summary>The caches (owners only), for addresses and byte counts. Owned by the session.</summary>
    public KvCacheSet Caches { get; }

    /// <summary>
    /// With <see cref="ModelOptions.CudaGraphDecode"/>: how host ↔ device copies of the graph step are made
    /// ("OrtEnv.CopyTensors" or "cudaMemcpy"); null before the first decode or without CUDA graphs.
    /// </summary>
    public string? CudaGraphTransfer => _graph?.Transfer;
    /// <summary>Host time the CUDA-graph decode steps spent so far by phase (null before the first graphed step): where a step's time goes on the host.</summary>
    public CudaGraphStepTime? CudaGraphStepTime => _graph?.Time;

    /// <summary>
    /// Why decode steps of a model with this cache plan cannot be captured in a CUDA graph
    /// (<see cref="ModelOptions.CudaGraphDecode"/>), or null when they can: the plan must come from the ops backend
    /// (ORT captures a graph only when every node runs on the CUDA provider), preallocate every cache, and have a
    /// new_lengths input (rows left out of a step get 0) and no attention_mask (its shape grows every step).
    /// </summary>
    public static string? CudaGraphDecodeBlocker(CachePlan? plan)
    {
        if (plan is null) return "ModelOptions.CudaGraphDecode needs a converted model (no cache plan in its metadata); convert it with `mixattn convert`, or turn CudaGraphDecode off.";
        if (plan.Caches.Any(c => c.Capacity == CapacityRule.Growing))
            return $"ModelOptions.CudaGraphDecode needs preallocated caches; this conversion's (backend '{plan.Backend}') grow each step. Convert it with the ops backend, or turn CudaGraphDecode off.";
        if (!plan.RunsOnCustomOps)
            return $"ModelOptions.CudaGraphDecode needs a conversion with the ops backend (every node on the CUDA execution provider); backend '{plan.Backend}' keeps shape arithmetic on the CPU (ORT's GroupQueryAttention reads total_sequence_length there). Convert it with the ops backend, or turn CudaGraphDecode off.";
        if (plan.NewLengths is null)
            return $"ModelOptions.CudaGraphDecode needs a model with a new_lengths input (rows not in a step are skipped with new_lengths = 0); this conversion (backend '{plan.Backend}') has none. Convert it with the ops backend, or turn CudaGraphDecode off.";
        if (plan.AttentionMask is not null)
            return "ModelOptions.CudaGraphDecode cannot capture a model with an attention_mask input (its shape grows every step); turn CudaGraphDecode off.";
        return null;
    }

    /// <summary>The batch slot of a sequence.</summary>
    public int SlotOf(int sequence)
    {
        using var _ = Guard.Enter(nameof(SlotOf));
        return Slots.SlotOf(sequence);
    }

    /// <inheritdoc />
    public override SessionKvMemory Memory()
    {
        using var _ = Guard.Enter(nameof(Memory));
        return Caches.Memory();
    }

    private protected override int? MaxSequenceLength => Caches.GlobalCapacity;

    private protected override OrtValue RunPrefillChunk(int slot, long[] ids)
    {
        TakeBlocks(new[] { slot }, ids.Length);
        return RunStep(nameof(Prefill), slot, 1, ids.Length, ids, new[] { Slots.Length(slot) }, new[] { ids.Length });
    }

    /// <summary>
    /// Paged caches: gives each sequence in <paramref name="slots"/> the blocks for its length + <paramref name="newTokens"/>,
    /// all or none (<see cref="KvBlocksExhaustedException"/> before any block is taken when the free ones do not cover them).
    /// </summary>
    private void TakeBlocks(int[] slots, int newTokens)
    {
        if (Caches.Pool is not { } pool) return;
        int missing = 0;
        foreach (int slot in slots) missing += pool.Missing(slot, (long)Slots.Length(slot) + newTokens);
        if (missing > pool.FreeBlocks)
        {
            int first = slots.First(s => pool.Missing(s, (long)Slots.Length(s) + newTokens) > 0);
            throw new KvBlocksExhaustedException(Slots.SequenceAt(first) ?? -1, Slots.Length(first), newTokens, missing, pool.FreeBlocks, pool.TotalBlocks);
        }
        foreach (int slot in slots) pool.Grow(slot, (long)Slots.Length(slot) + newTokens);
    }

    private protected override void OnSequenceRemoved(int slot) => Caches.Pool?.Release(slot);

    // The whole prompt's blocks before the first chunk: a prefill the pool cannot hold fails before it writes anything.
    private protected override void BeforePrefill(int slot, int tokens) => TakeBlocks(new[] { slot }, tokens);

    /// <summary>
    /// Starts a new sequence that continues from everything <paramref name="sequence"/> has processed so far (a shared
    /// prompt prefix: prefill it once, then fork it for each continuation); returns the new id. Paged global caches share
    /// the prefix's full blocks (reference counted, stored once: <see cref="KvCacheSet.SharedBlocks"/>) and copy a partly
    /// filled last block (copy-on-write at the first block the two may write differently); contiguous caches and
    /// sliding rings are copied, so the fork's ring is the source's last-window state. The two sequences are independent
    /// afterwards: either may be removed first.
    /// </summary>
    /// <exception cref="MixAttentionException">No free batch slot, or (paged) no free block for the copy; nothing changes.</exception>
    public int ForkSequence(int sequence)
    {
        using var _ = Guard.Enter(nameof(ForkSequence));
        return Fork(sequence, Slots.Length(Slots.SlotOf(sequence)));
    }

    /// <summary>
    /// As <see cref="ForkSequence"/>, but the new sequence holds only the first <paramref name="positions"/> positions of
    /// <paramref name="sequence"/>. Fewer positions than the source holds are possible only where nothing but paged
    /// blocks must be carried (<see cref="ForksAtFullLengthOnly"/> false) and on a block boundary: a sliding ring holds
    /// the source's last window at its current length, which is not the window at an earlier position.
    /// </summary>
    internal int ForkPrefix(int sequence, int positions)
    {
        using var _ = Guard.Enter(nameof(ForkSequence));
        return Fork(sequence, positions);
    }

    /// <summary>
    /// True when a fork must take the source's whole length: the model has caches outside the block pool (sliding rings,
    /// contiguous caches), whose rows are per-slot state at the source's current length.
    /// </summary>
    internal bool ForksAtFullLengthOnly => Caches.Pool is null || Caches.Caches.Any(c => c.PoolBlocks is null);

    /// <summary>Blocks a decode step of <paramref name="sequences"/> (one token each) would take from the free list.</summary>
    internal int BlocksToDecode(IReadOnlyList<int> sequences)
    {
        using var _ = Guard.Enter(nameof(BlocksToDecode));
        if (Caches.Pool is not { } pool) return 0;
        int missing = 0;
        foreach (int sequence in sequences)
        {
            int slot = Slots.SlotOf(sequence);
            missing += pool.Missing(slot, (long)Slots.Length(slot) + 1);
        }
        return missing;
    }

    /// <summary>Blocks of <paramref name="sequence"/> no other sequence holds: what removing it returns to the free list.</summary>
    internal int ExclusiveBlocks(int sequence)
    {
        using var _ = Guard.Enter(nameof(ExclusiveBlocks));
        return Caches.Pool?.ExclusiveBlocks(Slots.SlotOf(sequence)) ?? 0;
    }

    private int Fork(int sequence, int positions)
    {
        Caches.ThrowIfDisposed();
        int source = Slots.SlotOf(sequence);
        int length = Slots.Length(source);
        var pool = Caches.Pool;
        if (positions < 0 || positions > length)
            throw new ArgumentOutOfRangeException(nameof(positions), $"sequence {sequence} holds {length} positions; a fork takes 0 to {length} of them, not {positions}.");
        if (positions < length && (ForksAtFullLengthOnly || positions % pool!.BlockSize != 0))
            throw new InvalidOperationException($"a fork of the first {positions} of sequence {sequence}'s {length} positions needs paged caches only and a block boundary (sliding rings and contiguous caches hold the state at the source's full length).");
        int slot = Slots.FirstFree();
        if (slot < 0) throw new MixAttentionException($"all {Config.MaxBatch} batch slots are in use (SessionConfig.MaxBatch = {Config.MaxBatch}); remove a sequence before forking {sequence}.");
        if (pool is not null && positions % pool.BlockSize != 0 && pool.FreeBlocks < 1)
            throw new KvBlocksExhaustedException(sequence, positions, 0, 1, pool.FreeBlocks, pool.TotalBlocks);
        var copy = pool?.Share(source, slot, positions);
        foreach (var c in Caches.Caches)
        {
            if (c.PoolBlocks is not null)
            {
                if (copy is { } blocks)
                    foreach (var buffer in new[] { c.Key, c.Value })
                        buffer.CopyWithin(blocks.From * c.BlockBytes, blocks.To * c.BlockBytes, c.BlockBytes);
            }
            else
                foreach (var buffer in new[] { c.Key, c.Value })
                    buffer.CopyWithin(source * c.SlotBytes, slot * c.SlotBytes, c.SlotBytes);
        }
        int id = Slots.Add(slot);
        Slots.Advance(slot, positions);
        return id;
    }

    /// <summary>
    /// The cache bytes a sequence in <paramref name="slot"/> holding pool <paramref name="blocks"/> owns, one part per
    /// cache tensor in one fixed order (per owner cache, K then V), which <see cref="SwappedSequence.Parts"/> follows:
    /// a pool's blocks in position order, as runs of blocks that lie next to each other in the pool (one copy each: on
    /// CUDA a copy is a cudaMemcpy call), or the slot's rows of a contiguous cache.
    /// </summary>
    private IEnumerable<(DeviceBuffer Buffer, List<(long Offset, long Bytes)> Runs)> HeldParts(int slot, IReadOnlyList<int> blocks)
    {
        foreach (var c in Caches.Caches)
            foreach (var buffer in new[] { c.Key, c.Value })
            {
                var runs = new List<(long Offset, long Bytes)>();
                if (c.PoolBlocks is null) runs.Add((slot * c.SlotBytes, c.SlotBytes));
                else
                    foreach (int block in blocks)
                    {
                        long at = block * c.BlockBytes;
                        if (runs.Count > 0 && runs[^1].Offset + runs[^1].Bytes == at) runs[^1] = (runs[^1].Offset, runs[^1].Bytes + c.BlockBytes);
                        else runs.Add((at, c.BlockBytes));
                    }
                yield return (buffer, runs);
            }
    }

    /// <summary>
    /// Swap-to-host preemption (<see cref="PreemptionMode.Swap"/>): copies what <paramref name="sequence"/> holds in the
    /// caches — the contents of its pool blocks in position order and its slot's rows of every contiguous cache and
    /// sliding ring — into host memory, then removes it (its slot and blocks return to the session).
    /// <see cref="SwapIn"/> restores it. Blocks it shares with another sequence are copied too and come back as its own.
    /// </summary>
    internal SwappedSequence SwapOut(int sequence)
    {
        SwappedSequence swapped;
        using (Guard.Enter(nameof(SwapOut)))
        {
            int slot = Slots.SlotOf(sequence);
            var blocks = Caches.Pool?.BlocksHeld(slot).ToArray() ?? Array.Empty<int>();
            var parts = HeldParts(slot, blocks).Select(p =>
            {
                var part = new byte[checked((int)p.Runs.Sum(r => r.Bytes))];
                int at = 0;
                foreach (var (offset, bytes) in p.Runs)
                {
                    p.Buffer.Read(offset, part.AsSpan(at, (int)bytes));
                    at += (int)bytes;
                }
                return part;
            }).ToList();
            swapped = new SwappedSequence(Slots.Length(slot), blocks.Length, parts);
        }
        RemoveSequence(sequence);
        return swapped;
    }

    /// <summary>
    /// Restores a sequence <see cref="SwapOut"/> took out, into a free slot and fresh pool blocks; returns its new id, or
    /// null (nothing changed) when no slot or too few free blocks are left.
    /// </summary>
    internal int? SwapIn(SwappedSequence swapped)
    {
        using var _ = Guard.Enter(nameof(SwapIn));
        Caches.ThrowIfDisposed();
        int slot = Slots.FirstFree();
        if (slot < 0) return null;
        var pool = Caches.Pool;
        long positions = pool is null ? 0 : (long)swapped.Blocks * pool.BlockSize;
        if (pool is not null && pool.Missing(slot, positions) > pool.FreeBlocks) return null;
        pool?.Grow(slot, positions);
        var blocks = pool?.BlocksHeld(slot).ToArray() ?? Array.Empty<int>();
        foreach (var (held, part) in HeldParts(slot, blocks).Zip(swapped.Parts))
        {
            int at = 0;
            foreach (var (offset, bytes) in held.Runs)
            {
                held.Buffer.Write(offset, part.AsSpan(at, (int)bytes));
                at += (int)bytes;
            }
        }
        int id = Slots.Add(slot);
        Slots.Advance(slot, swapped.Length);
        return id;
    }

    /// <summary>Tests: scatter the free blocks so block tables are non-contiguous and sequences interleave in the pool.</summary>
    internal void ScatterFreeBlocks(int seed) => Caches.Pool?.ScatterFreeBlocks(seed);

    private protected override void RunDecode(int[] slots, IReadOnlyList<long> tokens, float[][]? rows, Span<float> flat)
    {
        var (logits, rowOf) = Step(slots, tokens, onDevice: false);
        for (int i = 0; i < rowOf.Length; i++) CopyRow(logits, rowOf[i], i, rows, flat);
    }

    /// <summary>
    /// One decode step that leaves the logits where the model computed them — device memory on CUDA — instead of
    /// copying them to the host: for callers that sample on the device or need only some steps' logits. Returns the
    /// step's logits tensor and, for each listed sequence, its row in it; both stay valid until the next call on
    /// this session (the tensor is owned by the session: do not dispose it).
    /// </summary>
    public DeviceLogits DecodeOnDevice(IReadOnlyList<int> sequences, IReadOnlyList<long> tokens)
    {
        using var _ = Guard.Enter(nameof(Decode));
        var (logits, rowOf) = Step(CheckDecode(sequences, tokens, -1), tokens, onDevice: true);
        return new DeviceLogits(logits, rowOf);
    }

    /// <summary>
    /// Runs one decode step of checked sequences; returns the logits (host memory unless <paramref name="onDevice"/>;
    /// owned by the session until the next step) and each sequence's row in them.
    /// </summary>
    private (OrtValue Logits, int[] RowOf) Step(int[] slots, IReadOnlyList<long> tokens, bool onDevice)
    {
        _stepLogits?.Dispose(); // the previous step's logits, if this session owns them
        _stepLogits = null;
        if (Model.Options.CudaGraphDecode) return (DecodeGraph(slots, tokens, onDevice), slots);
        int first = slots.Min(), count = slots.Max() - first + 1;
        var ids = new long[count];
        var past = new int[count];
        var news = new int[count];
        bool hasNewLengths = _plan.NewLengths is not null;
        for (int r = 0; r < count; r++)
        {
            int slot = first + r;
            if (Slots.SequenceAt(slot) is { } other)
            {
                // A live sequence that is not part of this step: it gets no token (new_lengths = 0), or a filler at its
                // next position that its own next token overwrites.
                past[r] = Slots.Length(slot);
                news[r] = 0;
                if (!hasNewLengths && Caches.GlobalCapacity is { } cap && past[r] + 1 > cap)
                    throw new MixAttentionException($"sequence {other} is full (max length {cap}) and sits between the sequences of this step; remove it first (the model has no new_lengths input to skip it).");
            }
            else
                past[r] = 0;
        }
        for (int i = 0; i < slots.Length; i++)
        {
            int r = slots[i] - first;
            ids[r] = tokens[i];
            news[r] = 1;
        }
        TakeBlocks(slots, 1);
        _stepLogits = RunStep(nameof(Decode), first, count, 1, ids, past, news, onDevice);
        var rowOf = new int[slots.Length];
        for (int i = 0; i < slots.Length; i++)
        {
            rowOf[i] = slots[i] - first;
            Slots.Advance(slots[i], 1);
        }
        return (_stepLogits, rowOf);
    }

    /// <summary>
    /// A decode step as one CUDA graph replay: all MaxBatch rows, one token each; rows not in the step (live or free)
    /// get <c>new_lengths = 0</c> at their current length, so the ops write nothing for them.
    /// </summary>
    private OrtValue DecodeGraph(int[] slots, IReadOnlyList<long> tokens, bool onDevice)
    {
        Caches.ThrowIfDisposed();
        int b = Config.MaxBatch;
        var ids = new long[b];
        var past = new int[b];
        var news = new int[b];
        for (int r = 0; r < b; r++) past[r] = Slots.Length(r); // 0 for a free slot
        for (int i = 0; i < slots.Length; i++)
        {
            ids[slots[i]] = tokens[i];
            news[slots[i]] = 1;
        }
        if (VocabSize <= 0)
            throw new MixAttentionException($"{Model.Path}: CUDA-graph decode needs the vocabulary size; the logits' last dimension is symbolic and no prefill has run.");
        _graph ??= new CudaGraphStep(Model, Caches, b, VocabSize, PositionType, Model.NextGraphId());
        TakeBlocks(slots, 1);
        BeforeRun?.Invoke(nameof(Decode));
        var logits = _graph.Run(Model.OrtSession, ids, past, news, copyLogits: !onDevice);
        Steps++;
        foreach (int slot in slots) Slots.Advance(slot, 1);
        return logits; // owned by the graph step, valid until its next run
    }

    /// <summary>One model call over slots <c>[first, first + rows)</c> with <paramref name="s"/> tokens per row; returns the logits (caller disposes).</summary>
    private OrtValue RunStep(string operation, int first, int rows, int s, long[] ids, int[] past, int[] news, bool logitsOnDevice = false)
    {
        // The binding may still hold views of the caches: never run over a cache set disposed behind the session's back.
        Caches.ThrowIfDisposed();
        BindStepInputs(rows, s, ids, past, news);
        if (_boundRange != (first, rows))
        {
            Caches.Bind(Binding, first, rows);
            _boundRange = (first, rows);
        }
        if (Caches.Pool is { } pool)
        {
            // The table rows of this step's slots (a copy: the tensor pins it until the next step).
            _blockTable?.Dispose();
            _blockTable = OrtValue.CreateTensorValueFromMemory(pool.TableRows(first, rows), new long[] { rows, pool.MaxBlocksPerSequence });
            Binding.BindInput(_plan.BlockTable!, _blockTable);
        }
        return RunModel(operation, logitsOnDevice ? Model.CacheMemoryInfo : OrtMemoryInfo.DefaultInstance);
    }

    private protected override void ReleaseState()
    {
        _graph?.Dispose();
        _stepLogits?.Dispose();
        _stepLogits = null;
        _blockTable?.Dispose();
        Caches.Dispose();
    }
}
