using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MixAttention.Onnx.Lowering;

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
public sealed class MixAttentionSession : IDecoderSession
{
    private readonly OrtIoBinding _binding;
    private readonly RunOptions _runOptions = new();
    private readonly int?[] _slotSequence;
    private readonly int[] _slotLength;
    private readonly Dictionary<int, int> _slotOf = new();
    private readonly List<OrtValue> _stepInputs = new();
    private readonly StepIo.OnesMask _mask = new();
    private readonly TensorElementType _positionType;
    private readonly TensorElementType _maskType;
    private readonly CallGuard _guard;
    private (int First, int Rows) _boundRange = (-1, -1);
    private int _nextId;
    private CudaGraphStep? _graph;
    private OrtValue? _stepLogits; // the last decode step's logits when this session owns them (not the graph step's)

    /// <summary>
    /// A session over <paramref name="model"/>'s cache plan (<see cref="MixAttentionModel.CreateSession"/> picks this
    /// driver for converted models). Holds a reference to the model until disposed.
    /// </summary>
    /// <exception cref="MixAttentionException">The model has no cache plan or its caches grow; the configuration is invalid or its caches too large.</exception>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public MixAttentionSession(MixAttentionModel model, SessionConfig? config = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        config ??= new SessionConfig();
        config.Validate();
        var plan = model.Plan ?? throw new MixAttentionException(
            $"{model.Path} has no cache plan ('{CachePlan.MetadataKey}' in its metadata), so it is not a converted MixAttention model and MixAttentionSession cannot size its caches. " +
            "Convert it with `mixattn convert`, or run it as it is with model.CreateSession() (a PlainDecoderSession).");
        if (!model.IsInPlace)
            throw new MixAttentionException(
                $"{model.Path}: the caches of this conversion (backend '{plan.Backend}') grow each step and cannot be preallocated; run it with model.CreateSession() (a PlainDecoderSession).");
        Model = model;
        Config = config;
        if (model.Options.CudaGraphDecode && CudaGraphDecodeBlocker(plan) is { } why)
            throw new MixAttentionException($"{model.Path}: {why}");
        model.AddReference();
        try
        {
            if (model.Options.CudaGraphDecode) _runOptions.AddRunConfigEntry("gpu_graph_id", "-1"); // prefill: never captured
            Caches = new KvCacheSet(plan, config, model.Options.Device, model.DeviceAllocator(), model.CacheMemoryInfo);
            try
            {
                _binding = model.OrtSession.CreateIoBinding();
            }
            catch
            {
                Caches.Dispose();
                throw;
            }
        }
        catch
        {
            _runOptions.Dispose();
            model.Release();
            throw;
        }
        _guard = new CallGuard(nameof(MixAttentionSession), ReleaseResources);
        _slotSequence = new int?[config.MaxBatch];
        _slotLength = new int[config.MaxBatch];
        var inputs = model.OrtSession.InputMetadata;
        _positionType = plan.PositionIds is { } p ? inputs[p].ElementDataType : TensorElementType.Int64;
        _maskType = plan.AttentionMask is { } m ? inputs[m].ElementDataType : TensorElementType.Int64;
        VocabSize = model.VocabSize;
    }

    /// <inheritdoc />
    public MixAttentionModel Model { get; }
    /// <inheritdoc />
    public SessionConfig Config { get; }
    /// <summary>The caches (owners only), for addresses and byte counts. Owned by the session.</summary>
    public KvCacheSet Caches { get; }
    /// <inheritdoc />
    public int VocabSize { get; private set; }
    /// <inheritdoc />
    public IReadOnlyCollection<int> Sequences
    {
        get
        {
            _guard.ThrowIfDisposed();
            return _slotOf.Keys;
        }
    }
    /// <inheritdoc />
    public int FreeSlots
    {
        get
        {
            _guard.ThrowIfDisposed();
            return _slotSequence.Count(s => s is null);
        }
    }
    /// <summary>Model calls run so far.</summary>
    public long Steps { get; private set; }

    /// <summary>
    /// With <see cref="ModelOptions.CudaGraphDecode"/>: how host ↔ device copies of the graph step are made
    /// ("OrtEnv.CopyTensors" or "cudaMemcpy"); null before the first decode or without CUDA graphs.
    /// </summary>
    public string? CudaGraphTransfer => _graph?.Transfer;
    /// <summary>Host time the CUDA-graph decode steps spent so far by phase (null before the first graphed step): where a step's time goes on the host.</summary>
    public CudaGraphStepTime? CudaGraphStepTime => _graph?.Time;
    /// <summary>True once disposed.</summary>
    public bool IsDisposed => _guard.IsDisposed;

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
        if (plan.Backend != "ops")
            return $"ModelOptions.CudaGraphDecode needs a conversion with the ops backend (every node on the CUDA execution provider); backend '{plan.Backend}' keeps shape arithmetic on the CPU (ORT's GroupQueryAttention reads total_sequence_length there). Convert it with the ops backend, or turn CudaGraphDecode off.";
        if (plan.NewLengths is null)
            return $"ModelOptions.CudaGraphDecode needs a model with a new_lengths input (rows not in a step are skipped with new_lengths = 0); this conversion (backend '{plan.Backend}') has none. Convert it with the ops backend, or turn CudaGraphDecode off.";
        if (plan.AttentionMask is not null)
            return "ModelOptions.CudaGraphDecode cannot capture a model with an attention_mask input (its shape grows every step); turn CudaGraphDecode off.";
        return null;
    }

    /// <summary>Test hook: runs inside every model call (the session is busy), before ORT runs; gets "Prefill" or "Decode".</summary>
    internal Action<string>? BeforeRun { get; set; }

    /// <summary>The batch slot of a sequence.</summary>
    public int SlotOf(int sequence)
    {
        using var _ = _guard.Enter(nameof(SlotOf));
        return Slot(sequence);
    }

    private int Slot(int sequence) => _slotOf.TryGetValue(sequence, out var s) ? s : throw UnknownSequence(sequence, _slotOf.Keys);

    internal static MixAttentionException UnknownSequence(int sequence, IReadOnlyCollection<int> live) => new(
        $"sequence {sequence} does not exist in this session (removed, or never added by AddSequence); live sequences: {(live.Count == 0 ? "none" : string.Join(", ", live.Order().Take(16)) + (live.Count > 16 ? ", …" : ""))}.");

    /// <inheritdoc />
    public int AddSequence()
    {
        using var _ = _guard.Enter(nameof(AddSequence));
        int slot = Array.IndexOf(_slotSequence, null);
        if (slot < 0) throw new MixAttentionException($"all {Config.MaxBatch} batch slots are in use (SessionConfig.MaxBatch = {Config.MaxBatch}); remove a sequence first or open the session with a larger MaxBatch.");
        int id = _nextId++;
        _slotSequence[slot] = id;
        _slotLength[slot] = 0;
        _slotOf[id] = slot;
        return id;
    }

    /// <inheritdoc />
    public void RemoveSequence(int sequence)
    {
        using var _ = _guard.Enter(nameof(RemoveSequence));
        int slot = Slot(sequence);
        _slotSequence[slot] = null;
        _slotLength[slot] = 0;
        _slotOf.Remove(sequence);
    }

    /// <inheritdoc />
    public void Reset()
    {
        using var _ = _guard.Enter(nameof(Reset));
        Array.Fill(_slotSequence, null);
        Array.Clear(_slotLength);
        _slotOf.Clear();
    }

    /// <inheritdoc />
    public int Length(int sequence)
    {
        using var _ = _guard.Enter(nameof(Length));
        return _slotLength[Slot(sequence)];
    }

    /// <inheritdoc />
    public KvMemory Memory()
    {
        using var _ = _guard.Enter(nameof(Memory));
        return Caches.Memory();
    }

    private void CheckCapacity(int sequence, int length, int newTokens)
    {
        if (Caches.GlobalCapacity is { } cap && (long)length + newTokens > cap)
            throw new CacheOverflowException(sequence, length, newTokens, cap);
    }

    /// <summary>Token ids must index the embedding: <c>0 ≤ id &lt; vocab</c> (ORT's Gather would otherwise fail deep inside or read out of bounds).</summary>
    internal static void CheckToken(long token, int vocab, TensorElementType idsType, string where)
    {
        if (token >= 0 && (vocab > 0 ? token < vocab : idsType == TensorElementType.Int64 || token <= int.MaxValue)) return;
        throw new MixAttentionException(vocab > 0
            ? $"{where}: token id {token} is outside the model's vocabulary; ids must be in [0, {vocab})."
            : $"{where}: token id {token} is not a valid token id; ids must be >= 0{(idsType == TensorElementType.Int32 ? " and fit the model's int32 input" : "")}.");
    }

    /// <inheritdoc />
    public float[] Prefill(int sequence, ReadOnlySpan<long> tokens, bool allPositions = false)
    {
        using var _ = _guard.Enter(nameof(Prefill));
        int slot = Slot(sequence);
        if (tokens.Length == 0) throw new MixAttentionException($"Prefill of sequence {sequence} got no tokens; a prefill needs at least one token.");
        for (int i = 0; i < tokens.Length; i++) CheckToken(tokens[i], VocabSize, Model.InputIdsType, $"Prefill of sequence {sequence}, token {i}");
        CheckCapacity(sequence, _slotLength[slot], tokens.Length);
        float[]? all = null;
        float[] last = Array.Empty<float>();
        var chunk = Config.PrefillChunk;
        for (int done = 0; done < tokens.Length; done += chunk)
        {
            int s = Math.Min(chunk, tokens.Length - done);
            var ids = tokens.Slice(done, s).ToArray();
            using var logits = RunStep(nameof(Prefill), slot, 1, s, ids, new[] { _slotLength[slot] }, new[] { s });
            _slotLength[slot] += s;
            if (allPositions)
            {
                var rows = StepIo.Rows(logits, 0, 0, s);
                all ??= new float[(long)tokens.Length * (rows.Length / s)];
                rows.CopyTo(all, (long)done * (rows.Length / s));
            }
            else if (done + s == tokens.Length)
                last = StepIo.Rows(logits, 0, s - 1, 1);
        }
        return allPositions ? all! : last;
    }

    /// <summary>Checks a decode request before anything runs; returns the slots.</summary>
    internal static void CheckDecodeArguments(IReadOnlyList<int> sequences, IReadOnlyList<long> tokens)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        ArgumentNullException.ThrowIfNull(tokens);
        if (sequences.Count != tokens.Count)
            throw new ArgumentException($"Decode got {sequences.Count} sequences and {tokens.Count} tokens; pass exactly one token per sequence.", nameof(tokens));
        if (sequences.Count == 0)
            throw new ArgumentException("Decode got no sequences; pass at least one sequence and its next token.", nameof(sequences));
    }

    internal static MixAttentionException NotPrefilled(int sequence) =>
        new($"sequence {sequence} has no tokens yet: Prefill it with its prompt (at least one token) before Decode.");

    /// <inheritdoc />
    public float[][] Decode(IReadOnlyList<int> sequences, IReadOnlyList<long> tokens)
    {
        var rows = new float[sequences?.Count ?? 0][];
        DecodeInto(sequences!, tokens, rows, default);
        return rows;
    }

    /// <inheritdoc />
    public void Decode(IReadOnlyList<int> sequences, IReadOnlyList<long> tokens, Span<float> logits) => DecodeInto(sequences, tokens, null, logits);

    /// <summary>
    /// One decode step that leaves the logits where the model computed them — device memory on CUDA — instead of
    /// copying them to the host: for callers that sample on the device or need only some steps' logits. Returns the
    /// step's logits tensor and, for each listed sequence, its row in it; both stay valid until the next call on
    /// this session (the tensor is owned by the session: do not dispose it).
    /// </summary>
    public DeviceLogits DecodeOnDevice(IReadOnlyList<int> sequences, IReadOnlyList<long> tokens)
    {
        using var _ = _guard.Enter(nameof(Decode));
        var (logits, rowOf) = Step(sequences, tokens, onDevice: true);
        return new DeviceLogits(logits, rowOf);
    }

    /// <summary>The decode step behind the host overloads: logits go to new arrays in <paramref name="rows"/> or, when it is null, to <paramref name="flat"/>.</summary>
    private void DecodeInto(IReadOnlyList<int> sequences, IReadOnlyList<long> tokens, float[][]? rows, Span<float> flat)
    {
        using var _ = _guard.Enter(nameof(Decode));
        var (logits, rowOf) = Step(sequences, tokens, onDevice: false, flatLength: rows is null ? flat.Length : -1);
        for (int i = 0; i < rowOf.Length; i++) CopyRow(logits, rowOf[i], i, rows, flat);
    }

    /// <summary>
    /// Validates and runs one decode step; returns the logits (host memory unless <paramref name="onDevice"/>; owned by
    /// the session until the next step) and each listed sequence's row in them. <paramref name="flatLength"/> (when
    /// not -1) is the caller's span, checked with the other arguments, before anything runs.
    /// </summary>
    private (OrtValue Logits, int[] RowOf) Step(IReadOnlyList<int> sequences, IReadOnlyList<long> tokens, bool onDevice, int flatLength = -1)
    {
        CheckDecodeArguments(sequences, tokens);
        var slots = new int[sequences.Count];
        var seen = new HashSet<int>();
        for (int i = 0; i < slots.Length; i++)
        {
            int id = sequences[i];
            slots[i] = Slot(id);
            if (!seen.Add(id)) throw new ArgumentException($"sequence {id} is listed twice in one Decode; each sequence takes one token per step.", nameof(sequences));
            if (_slotLength[slots[i]] == 0) throw NotPrefilled(id);
            CheckToken(tokens[i], VocabSize, Model.InputIdsType, $"Decode of sequence {id}");
            CheckCapacity(id, _slotLength[slots[i]], 1);
        }
        if (flatLength >= 0) CheckLogitsDestination(flatLength, sequences.Count, VocabSize);
        _stepLogits?.Dispose(); // the previous step's logits, if this session owns them
        _stepLogits = null;
        if (Model.Options.CudaGraphDecode) return (DecodeGraph(slots, tokens, onDevice), slots);
        int first = slots.Min(), count = slots.Max() - first + 1;
        var ids = new long[count];
        var past = new int[count];
        var news = new int[count];
        bool hasNewLengths = Model.Plan!.NewLengths is not null;
        for (int r = 0; r < count; r++)
        {
            int slot = first + r;
            if (_slotSequence[slot] is { } other)
            {
                // A live sequence that is not part of this step: it gets no token (new_lengths = 0), or a filler at its
                // next position that its own next token overwrites.
                past[r] = _slotLength[slot];
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
        _stepLogits = RunStep(nameof(Decode), first, count, 1, ids, past, news, onDevice);
        var rowOf = new int[slots.Length];
        for (int i = 0; i < slots.Length; i++)
        {
            rowOf[i] = slots[i] - first;
            _slotLength[slots[i]]++;
        }
        return (_stepLogits, rowOf);
    }

    /// <summary>Row <paramref name="row"/> of step logits <c>[rows, 1, V]</c> into <c>rows[index]</c> (a new array) or row <paramref name="index"/> of <paramref name="flat"/>.</summary>
    private static void CopyRow(OrtValue logits, int row, int index, float[][]? rows, Span<float> flat)
    {
        if (rows is not null) rows[index] = StepIo.Rows(logits, row, 0, 1);
        else
        {
            int v = (int)logits.GetTensorTypeAndShape().Shape[2];
            StepIo.RowsInto(logits, row, 0, 1, flat.Slice(index * v, v));
        }
    }

    internal static void CheckLogitsDestination(int length, int sequences, int vocab)
    {
        if (length != (long)sequences * vocab)
            throw new ArgumentException($"Decode of {sequences} sequences writes {sequences} × {vocab} (vocabulary) = {(long)sequences * vocab} logits; the destination span holds {length}.", "logits");
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
        for (int r = 0; r < b; r++) past[r] = _slotSequence[r] is null ? 0 : _slotLength[r];
        for (int i = 0; i < slots.Length; i++)
        {
            ids[slots[i]] = tokens[i];
            news[slots[i]] = 1;
        }
        if (VocabSize <= 0)
            throw new MixAttentionException($"{Model.Path}: CUDA-graph decode needs the vocabulary size; the logits' last dimension is symbolic and no prefill has run.");
        _graph ??= new CudaGraphStep(Model, Caches, b, VocabSize, _positionType, Model.NextGraphId());
        BeforeRun?.Invoke(nameof(Decode));
        var logits = _graph.Run(Model.OrtSession, ids, past, news, copyLogits: !onDevice);
        Steps++;
        foreach (int slot in slots) _slotLength[slot]++;
        return logits; // owned by the graph step, valid until its next run
    }

    /// <summary>One model call over slots <c>[first, first + rows)</c> with <paramref name="s"/> tokens per row; returns the logits (caller disposes).</summary>
    private OrtValue RunStep(string operation, int first, int rows, int s, long[] ids, int[] past, int[] news, bool logitsOnDevice = false)
    {
        // The binding may still hold views of the caches: never run over a cache set disposed behind the session's back.
        Caches.ThrowIfDisposed();
        var plan = Model.Plan!;
        foreach (var v in _stepInputs) v.Dispose();
        _stepInputs.Clear();
        OrtValue Keep(OrtValue v) { _stepInputs.Add(v); return v; }
        bool hasNewLengths = plan.NewLengths is not null;

        _binding.BindInput(plan.InputIds, Keep(StepIo.Int(Model.InputIdsType, ids, new long[] { rows, s })));
        if (plan.PositionIds is { } posName)
        {
            var pos = new long[rows * s];
            for (int r = 0; r < rows; r++)
                for (int i = 0; i < s; i++) pos[r * s + i] = past[r] + i;
            _binding.BindInput(posName, Keep(StepIo.Int(_positionType, pos, new long[] { rows, s })));
        }
        if (plan.AttentionMask is { } maskName)
        {
            _binding.BindInput(maskName, Keep(_mask.Create(_maskType, rows, past.Max() + s)));
        }
        var pastLengths = (int[])past.Clone();
        _binding.BindInput(plan.PastLengths!, Keep(OrtValue.CreateTensorValueFromMemory(pastLengths, new long[] { rows })));
        if (hasNewLengths)
            _binding.BindInput(plan.NewLengths!, Keep(OrtValue.CreateTensorValueFromMemory((int[])news.Clone(), new long[] { rows })));
        if (_boundRange != (first, rows))
        {
            Caches.Bind(_binding, first, rows);
            _boundRange = (first, rows);
        }
        _binding.BindOutputToDevice(plan.Logits, logitsOnDevice ? Model.CacheMemoryInfo : OrtMemoryInfo.DefaultInstance);
        BeforeRun?.Invoke(operation);
        Model.OrtSession.RunWithBinding(_runOptions, _binding);
        Steps++;
        var names = _binding.GetOutputNames();
        var outputs = _binding.GetOutputValues(); // not disposed as a whole: the logits value is returned
        OrtValue? logits = null;
        int k = 0;
        foreach (var v in outputs)
        {
            if (names[k++] == plan.Logits) logits = v;
            else v.Dispose();
        }
        if (VocabSize <= 0 && logits is not null) VocabSize = (int)logits.GetTensorTypeAndShape().Shape[2];
        return logits ?? throw new InvalidOperationException("the logits output was not produced");
    }

    /// <summary>
    /// Disposes the binding, step inputs and caches (in reverse order of creation) and releases the model. A second call
    /// does nothing; a call while a step runs on another thread takes effect when that step ends.
    /// </summary>
    public void Dispose() => _guard.Dispose();

    private void ReleaseResources()
    {
        _graph?.Dispose();
        _stepLogits?.Dispose();
        _stepLogits = null;
        _binding.Dispose();
        foreach (var v in _stepInputs) v.Dispose();
        _stepInputs.Clear();
        _runOptions.Dispose();
        Caches.Dispose();
        Model.Release();
    }
}
