using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// What every decoding session shares: sequences in batch slots (<see cref="SlotTable"/>), the argument checks of
/// <see cref="Prefill"/> and <see cref="Decode(IReadOnlyList{int}, IReadOnlyList{long})"/> (the same messages for every
/// session), the prefill chunk loop, the step inputs every decoder takes (ids, positions, mask, lengths), one model call
/// and its logits. A session adds how it keeps the caches: <see cref="InPlaceCacheSession"/> binds preallocated
/// caches in place; <see cref="GrowingCacheSession"/> feeds each call's present outputs back as the next past.
/// Not thread-safe: one call at a time (a concurrent call throws <see cref="InvalidOperationException"/>).
/// </summary>
public abstract class DecoderSession : IDecoderSession
{
    /// <summary>Names of the optional step inputs a model takes (null: the model has no such input).</summary>
    private protected readonly record struct StepInputNames(string? PositionIds, string? AttentionMask, string? PastLengths, string? NewLengths);

    private readonly RunOptions _runOptions = new();
    private readonly List<OrtValue> _stepInputs = new();
    private readonly StepIo.OnesMask _mask = new();
    private readonly CallGuard _guard;
    private OrtIoBinding _binding = null!;
    private StepInputNames _inputs;
    private TensorElementType _positionType = TensorElementType.Int64, _maskType = TensorElementType.Int64;

    /// <summary>Checks the arguments and keeps them; <see cref="Open"/> takes the model's resources.</summary>
    private protected DecoderSession(MixAttentionModel model, SessionConfig? config)
    {
        ArgumentNullException.ThrowIfNull(model);
        config ??= new SessionConfig();
        config.Validate();
        // Positions past the model's rotary tables would fail (or read past them) mid-sequence: refuse the session instead.
        if (model.Plan?.MaxPositions is { } positions && config.MaxLength > positions)
            throw new MixAttentionException($"{model.Path}: SessionConfig.MaxLength {config.MaxLength} is longer than this model's position tables allow ({positions} positions: the rows of the rotary cos/sin caches its attention reads). Set MaxLength to {positions} or less, or export the model with a longer max_position_embeddings.");
        Model = model;
        Config = config;
        VocabSize = model.VocabSize;
        Slots = new SlotTable(config.MaxBatch);
        _guard = new CallGuard(GetType().Name, Release);
    }

    /// <summary>
    /// Takes a reference to the model and creates the binding (undone when that fails); the constructor of a session
    /// calls it once its own checks passed. A failure after it must be undone with <see cref="ReleaseOpened"/>.
    /// </summary>
    private protected void Open(StepInputNames inputs)
    {
        _inputs = inputs;
        var metadata = Model.OrtSession.InputMetadata;
        if (inputs.PositionIds is { } p) _positionType = metadata[p].ElementDataType;
        if (inputs.AttentionMask is { } m) _maskType = metadata[m].ElementDataType;
        Model.AddReference();
        try
        {
            _binding = Model.OrtSession.CreateIoBinding();
        }
        catch
        {
            _runOptions.Dispose();
            Model.Release();
            throw;
        }
    }

    /// <summary>Undoes <see cref="Open"/> (for a constructor that fails after it).</summary>
    private protected void ReleaseOpened()
    {
        _binding.Dispose();
        _runOptions.Dispose();
        Model.Release();
    }

    /// <inheritdoc />
    public MixAttentionModel Model { get; }
    /// <inheritdoc />
    public SessionConfig Config { get; }
    /// <inheritdoc />
    public int VocabSize { get; private set; }
    /// <summary>Model calls run so far.</summary>
    public long Steps { get; private protected set; }
    /// <inheritdoc />
    public IReadOnlyCollection<int> Sequences
    {
        get
        {
            _guard.ThrowIfDisposed();
            return Slots.Sequences;
        }
    }
    /// <inheritdoc />
    public int FreeSlots
    {
        get
        {
            _guard.ThrowIfDisposed();
            return Slots.FreeCount;
        }
    }
    /// <summary>True once disposed.</summary>
    public bool IsDisposed => _guard.IsDisposed;

    /// <summary>Test hook: runs inside every model call (the session is busy), before ORT runs; gets "Prefill" or "Decode".</summary>
    internal Action<string>? BeforeRun { get; set; }

    private protected SlotTable Slots { get; }
    private protected CallGuard Guard => _guard;
    private protected RunOptions RunOptions => _runOptions;
    private protected OrtIoBinding Binding => _binding;
    private protected TensorElementType PositionType => _positionType;

    /// <summary>The most tokens a sequence may hold (null: no limit), checked before a step runs.</summary>
    private protected abstract int? MaxSequenceLength { get; }

    /// <summary>Runs one prefill chunk of the sequence in <paramref name="slot"/>; returns the logits <c>[1, S, V]</c> (caller disposes).</summary>
    private protected abstract OrtValue RunPrefillChunk(int slot, long[] ids);

    /// <summary>
    /// Runs one decode step of the (checked) sequences in <paramref name="slots"/>, advances their lengths and copies
    /// their logits with <see cref="CopyRow"/>.
    /// </summary>
    private protected abstract void RunDecode(int[] slots, IReadOnlyList<long> tokens, float[][]? rows, Span<float> flat);

    /// <summary>A checked prefill of <paramref name="tokens"/> tokens is about to run in <paramref name="slot"/>: reserve what it needs, or throw before any chunk runs (nothing by default).</summary>
    private protected virtual void BeforePrefill(int slot, int tokens) { }

    /// <summary>A sequence got <paramref name="slot"/>: set up its state (nothing by default).</summary>
    private protected virtual void OnSequenceAdded(int slot) { }

    /// <summary>The sequence in <paramref name="slot"/> ends: free its state (nothing by default).</summary>
    private protected virtual void OnSequenceRemoved(int slot) { }

    /// <summary>Frees what the session owns besides the binding and step inputs (after them); runs once.</summary>
    private protected abstract void ReleaseState();

    /// <inheritdoc />
    public abstract SessionKvMemory Memory();

    /// <inheritdoc />
    public int AddSequence()
    {
        using var _ = _guard.Enter(nameof(AddSequence));
        int slot = Slots.FirstFree();
        if (slot < 0) throw new MixAttentionException($"all {Config.MaxBatch} batch slots are in use (SessionConfig.MaxBatch = {Config.MaxBatch}); remove a sequence first or open the session with a larger MaxBatch.");
        OnSequenceAdded(slot);
        return Slots.Add(slot);
    }

    /// <inheritdoc />
    public void RemoveSequence(int sequence)
    {
        using var _ = _guard.Enter(nameof(RemoveSequence));
        OnSequenceRemoved(Slots.SlotOf(sequence));
        Slots.Remove(sequence);
    }

    /// <inheritdoc />
    public void Reset()
    {
        using var _ = _guard.Enter(nameof(Reset));
        RemoveAll();
    }

    private void RemoveAll()
    {
        foreach (var id in Slots.Sequences.ToList()) OnSequenceRemoved(Slots.SlotOf(id));
        Slots.Clear();
    }

    /// <inheritdoc />
    public int Length(int sequence)
    {
        using var _ = _guard.Enter(nameof(Length));
        return Slots.Length(Slots.SlotOf(sequence));
    }

    /// <inheritdoc />
    public float[] Prefill(int sequence, ReadOnlySpan<long> tokens, bool allPositions = false)
    {
        using var _ = _guard.Enter(nameof(Prefill));
        int slot = Slots.SlotOf(sequence);
        if (tokens.Length == 0) throw new MixAttentionException($"Prefill of sequence {sequence} got no tokens; a prefill needs at least one token.");
        for (int i = 0; i < tokens.Length; i++) CheckToken(tokens[i], $"Prefill of sequence {sequence}, token {i}");
        CheckCapacity(sequence, Slots.Length(slot), tokens.Length);
        BeforePrefill(slot, tokens.Length);
        float[]? all = null;
        float[] last = Array.Empty<float>();
        var chunk = Config.PrefillChunk;
        for (int done = 0; done < tokens.Length; done += chunk)
        {
            int s = Math.Min(chunk, tokens.Length - done);
            using var logits = RunPrefillChunk(slot, tokens.Slice(done, s).ToArray());
            Slots.Advance(slot, s);
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

    /// <inheritdoc />
    public float[][] Decode(IReadOnlyList<int> sequences, IReadOnlyList<long> tokens)
    {
        var rows = new float[sequences?.Count ?? 0][];
        DecodeInto(sequences!, tokens, rows, default);
        return rows;
    }

    /// <inheritdoc />
    public void Decode(IReadOnlyList<int> sequences, IReadOnlyList<long> tokens, Span<float> logits) => DecodeInto(sequences, tokens, null, logits);

    /// <summary>The decode step behind the host overloads: logits go to new arrays in <paramref name="rows"/> or, when it is null, to <paramref name="flat"/>.</summary>
    private void DecodeInto(IReadOnlyList<int> sequences, IReadOnlyList<long> tokens, float[][]? rows, Span<float> flat)
    {
        using var _ = _guard.Enter(nameof(Decode));
        var slots = CheckDecode(sequences, tokens, rows is null ? flat.Length : -1);
        RunDecode(slots, tokens, rows, flat);
    }

    /// <summary>
    /// Checks a decode request before anything runs — one token per listed, live, prefilled sequence, each listed
    /// once, in the vocabulary and with room left; <paramref name="flatLength"/> (when not -1) is the caller's logits
    /// span — and returns the sequences' slots.
    /// </summary>
    private protected int[] CheckDecode(IReadOnlyList<int> sequences, IReadOnlyList<long> tokens, int flatLength)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        ArgumentNullException.ThrowIfNull(tokens);
        if (sequences.Count != tokens.Count)
            throw new ArgumentException($"Decode got {sequences.Count} sequences and {tokens.Count} tokens; pass exactly one token per sequence.", nameof(tokens));
        if (sequences.Count == 0)
            throw new ArgumentException("Decode got no sequences; pass at least one sequence and its next token.", nameof(sequences));
        var slots = new int[sequences.Count];
        var seen = new HashSet<int>();
        for (int i = 0; i < slots.Length; i++)
        {
            int id = sequences[i];
            slots[i] = Slots.SlotOf(id);
            if (!seen.Add(id)) throw new ArgumentException($"sequence {id} is listed twice in one Decode; each sequence takes one token per step.", nameof(sequences));
            if (Slots.Length(slots[i]) == 0)
                throw new MixAttentionException($"sequence {id} has no tokens yet: Prefill it with its prompt (at least one token) before Decode.");
            CheckToken(tokens[i], $"Decode of sequence {id}");
            CheckCapacity(id, Slots.Length(slots[i]), 1);
        }
        if (flatLength >= 0 && flatLength != (long)sequences.Count * VocabSize)
            throw new ArgumentException($"Decode of {sequences.Count} sequences writes {sequences.Count} × {VocabSize} (vocabulary) = {(long)sequences.Count * VocabSize} logits; the destination span holds {flatLength}.", "logits");
        return slots;
    }

    private void CheckCapacity(int sequence, int length, int newTokens)
    {
        if (MaxSequenceLength is { } cap && (long)length + newTokens > cap)
            throw new CacheOverflowException(sequence, length, newTokens, cap);
    }

    /// <summary>Token ids must index the embedding: <c>0 ≤ id &lt; vocab</c> (ORT's Gather would otherwise fail deep inside or read out of bounds).</summary>
    private void CheckToken(long token, string where)
    {
        int vocab = VocabSize;
        var idsType = Model.InputIdsType;
        if (token >= 0 && (vocab > 0 ? token < vocab : idsType == TensorElementType.Int64 || token <= int.MaxValue)) return;
        throw new MixAttentionException(vocab > 0
            ? $"{where}: token id {token} is outside the model's vocabulary; ids must be in [0, {vocab})."
            : $"{where}: token id {token} is not a valid token id; ids must be >= 0{(idsType == TensorElementType.Int32 ? " and fit the model's int32 input" : "")}.");
    }

    /// <summary>Row <paramref name="row"/> of step logits <c>[rows, 1, V]</c> into <c>rows[index]</c> (a new array) or row <paramref name="index"/> of <paramref name="flat"/>.</summary>
    private protected static void CopyRow(OrtValue logits, int row, int index, float[][]? rows, Span<float> flat)
    {
        if (rows is not null) rows[index] = StepIo.Rows(logits, row, 0, 1);
        else
        {
            int v = (int)logits.GetTensorTypeAndShape().Shape[2];
            StepIo.RowsInto(logits, row, 0, 1, flat.Slice(index * v, v));
        }
    }

    /// <summary>
    /// Binds the inputs of a call over <paramref name="rows"/> rows of <paramref name="s"/> tokens each: the ids, and
    /// the positions, mask and lengths the model takes (row r continues at <c>past[r]</c> and adds <c>news[r]</c> tokens).
    /// The caches are the caller's to bind.
    /// </summary>
    private protected void BindStepInputs(int rows, int s, long[] ids, int[] past, int[] news)
    {
        foreach (var v in _stepInputs) v.Dispose();
        _stepInputs.Clear();
        OrtValue Keep(OrtValue v) { _stepInputs.Add(v); return v; }

        _binding.BindInput(Model.InputIds, Keep(StepIo.Int(Model.InputIdsType, ids, new long[] { rows, s })));
        if (_inputs.PositionIds is { } posName)
        {
            var pos = new long[rows * s];
            for (int r = 0; r < rows; r++)
                for (int i = 0; i < s; i++) pos[r * s + i] = past[r] + i;
            _binding.BindInput(posName, Keep(StepIo.Int(_positionType, pos, new long[] { rows, s })));
        }
        if (_inputs.AttentionMask is { } maskName)
            _binding.BindInput(maskName, Keep(_mask.Create(_maskType, rows, past.Max() + s)));
        // Copies: the tensors pin these arrays until the next step, and callers reuse theirs.
        if (_inputs.PastLengths is { } pastName)
            _binding.BindInput(pastName, Keep(OrtValue.CreateTensorValueFromMemory((int[])past.Clone(), new long[] { rows })));
        if (_inputs.NewLengths is { } newName)
            _binding.BindInput(newName, Keep(OrtValue.CreateTensorValueFromMemory((int[])news.Clone(), new long[] { rows })));
    }

    /// <summary>
    /// Runs the model on the bound inputs and returns its logits (placed in <paramref name="logitsMemory"/>; caller
    /// disposes). Every other output goes to <paramref name="takeOutput"/>, which returns true when it keeps the value;
    /// values nobody keeps are disposed.
    /// </summary>
    private protected OrtValue RunModel(string operation, OrtMemoryInfo logitsMemory, Func<string, OrtValue, bool>? takeOutput = null)
    {
        _binding.BindOutputToDevice(Model.Logits, logitsMemory);
        BeforeRun?.Invoke(operation);
        Model.OrtSession.RunWithBinding(_runOptions, _binding);
        Steps++;
        var names = _binding.GetOutputNames();
        var outputs = _binding.GetOutputValues(); // not disposed as a whole: the logits value is returned, others may be kept
        OrtValue? logits = null;
        int k = 0;
        foreach (var v in outputs)
        {
            var name = names[k++];
            if (name == Model.Logits) logits = v;
            else if (takeOutput is null || !takeOutput(name, v)) v.Dispose();
        }
        if (VocabSize <= 0 && logits is not null) VocabSize = (int)logits.GetTensorTypeAndShape().Shape[2];
        return logits ?? throw new InvalidOperationException("the logits output was not produced");
    }

    /// <summary>
    /// Disposes the binding, step inputs and the session's caches, and releases the model. A second call does
    /// nothing; a call while a step runs on another thread takes effect when that step ends.
    /// </summary>
    public void Dispose() => _guard.Dispose();

    private void Release()
    {
        _binding.Dispose();
        foreach (var v in _stepInputs) v.Dispose();
        _stepInputs.Clear();
        ReleaseState();
        _runOptions.Dispose();
        Model.Release();
    }
}
