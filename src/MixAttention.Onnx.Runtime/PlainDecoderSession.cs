using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// Decoding with an unconverted export (past/present concatenation: the cache grows by the step's tokens each call)
/// or a converted model whose caches grow (reference backend). Each sequence keeps its own past tensors on the
/// session's device and runs in its own batch-1 call, so sequences of any lengths can be added and removed;
/// the present outputs of one call are the past inputs of the next (no host copy, but ORT allocates new tensors
/// each step — the cost the converted, in-place driver removes). For comparisons and baselines.
/// A sequence holds at most <see cref="SessionConfig.MaxLength"/> tokens (every layer keeps a full cache).
/// Not thread-safe: one call at a time (a concurrent call throws <see cref="InvalidOperationException"/>).
/// </summary>
public sealed class PlainDecoderSession : IDecoderSession
{
    private sealed class State
    {
        public int Length;
        public Dictionary<string, OrtValue> Past = new();
    }

    private readonly Dictionary<int, State> _sequences = new();
    private readonly List<(string Past, string Present, long[] Dims, int SeqAxis, TensorElementType Type)> _caches = new();
    private readonly OrtIoBinding _binding;
    private readonly RunOptions _runOptions = new();
    private readonly List<OrtValue> _stepInputs = new();
    private readonly StepIo.OnesMask _mask = new();
    private readonly string? _positionIds, _attentionMask, _pastLengths, _newLengths;
    private readonly TensorElementType _positionType, _maskType;
    private readonly CallGuard _guard;
    private int _nextId;

    internal PlainDecoderSession(MixAttentionModel model, SessionConfig? config)
    {
        ArgumentNullException.ThrowIfNull(model);
        config ??= new SessionConfig();
        config.Validate();
        Model = model;
        Config = config;
        VocabSize = model.VocabSize;
        var inputs = model.OrtSession.InputMetadata;
        var outputs = model.OrtSession.OutputMetadata;
        var plan = model.Plan;
        foreach (var (name, meta) in inputs)
        {
            if (plan is null ? name.StartsWith("past", StringComparison.Ordinal) && name != "past_lengths" : plan.Caches.Any(c => c.PastKey == name || c.PastValue == name))
            {
                var present = PresentFor(name) ?? throw new MixAttentionException($"{model.Path}: no present output for the cache input '{name}'.");
                if (!outputs.ContainsKey(present)) throw new MixAttentionException($"{model.Path}: the cache input '{name}' has no output '{present}'.");
                var dims = meta.Dimensions.Select(d => (long)d).ToArray();
                _caches.Add((name, present, dims, dims.Length - 2, meta.ElementDataType));
            }
        }
        string? Find(string? planned, Func<string, bool> match) => planned ?? inputs.Keys.FirstOrDefault(match);
        _positionIds = Find(plan?.PositionIds, n => n.Contains("position", StringComparison.Ordinal));
        _attentionMask = plan is null ? inputs.Keys.FirstOrDefault(n => n.Contains("attention_mask", StringComparison.Ordinal)) : plan.AttentionMask;
        _pastLengths = plan?.PastLengths ?? (inputs.ContainsKey("past_lengths") ? "past_lengths" : null);
        _newLengths = plan?.NewLengths ?? (inputs.ContainsKey("new_lengths") ? "new_lengths" : null);
        _positionType = _positionIds is null ? TensorElementType.Int64 : inputs[_positionIds].ElementDataType;
        _maskType = _attentionMask is null ? TensorElementType.Int64 : inputs[_attentionMask].ElementDataType;
        model.AddReference();
        try
        {
            _binding = model.OrtSession.CreateIoBinding();
        }
        catch
        {
            _runOptions.Dispose();
            model.Release();
            throw;
        }
        _guard = new CallGuard(nameof(PlainDecoderSession), ReleaseResources);

        string? PresentFor(string past)
        {
            if (plan is not null)
                return plan.Caches.Where(c => c.PastKey == past).Select(c => c.PresentKey)
                    .Concat(plan.Caches.Where(c => c.PastValue == past).Select(c => c.PresentValue)).FirstOrDefault();
            if (past.StartsWith("past_key_values.", StringComparison.Ordinal)) return "present." + past["past_key_values.".Length..];
            if (past.StartsWith("past_", StringComparison.Ordinal)) return "present_" + past["past_".Length..];
            if (past.StartsWith("past.", StringComparison.Ordinal)) return "present." + past["past.".Length..];
            return null;
        }
    }

    /// <inheritdoc />
    public MixAttentionModel Model { get; }
    /// <inheritdoc />
    public SessionConfig Config { get; }
    /// <inheritdoc />
    public int VocabSize { get; private set; }
    /// <inheritdoc />
    public IReadOnlyCollection<int> Sequences
    {
        get
        {
            _guard.ThrowIfDisposed();
            return _sequences.Keys;
        }
    }
    /// <inheritdoc />
    public int FreeSlots
    {
        get
        {
            _guard.ThrowIfDisposed();
            return Config.MaxBatch - _sequences.Count;
        }
    }
    /// <summary>True once disposed.</summary>
    public bool IsDisposed => _guard.IsDisposed;

    /// <summary>Test hook: runs inside every model call (the session is busy), before ORT runs; gets "Prefill" or "Decode".</summary>
    internal Action<string>? BeforeRun { get; set; }

    /// <inheritdoc />
    public int AddSequence()
    {
        using var _ = _guard.Enter(nameof(AddSequence));
        if (_sequences.Count >= Config.MaxBatch) throw new MixAttentionException($"all {Config.MaxBatch} batch slots are in use (SessionConfig.MaxBatch = {Config.MaxBatch}); remove a sequence first or open the session with a larger MaxBatch.");
        var state = new State();
        foreach (var c in _caches)
        {
            var dims = (long[])c.Dims.Clone();
            for (int i = 0; i < dims.Length; i++)
                if (dims[i] < 0) dims[i] = i == c.SeqAxis ? 0 : 1;
            dims[c.SeqAxis] = 0;
            state.Past[c.Past] = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, c.Type, dims);
        }
        _sequences[_nextId] = state;
        return _nextId++;
    }

    private State Get(int sequence) => _sequences.TryGetValue(sequence, out var s) ? s : throw MixAttentionSession.UnknownSequence(sequence, _sequences.Keys);

    /// <inheritdoc />
    public void RemoveSequence(int sequence)
    {
        using var _ = _guard.Enter(nameof(RemoveSequence));
        Remove(sequence);
    }

    private void Remove(int sequence)
    {
        var s = Get(sequence);
        foreach (var v in s.Past.Values) v.Dispose();
        _sequences.Remove(sequence);
    }

    /// <inheritdoc />
    public void Reset()
    {
        using var _ = _guard.Enter(nameof(Reset));
        foreach (var id in _sequences.Keys.ToList()) Remove(id);
    }

    /// <inheritdoc />
    public int Length(int sequence)
    {
        using var _ = _guard.Enter(nameof(Length));
        return Get(sequence).Length;
    }

    /// <inheritdoc />
    public KvMemory Memory()
    {
        using var _ = _guard.Enter(nameof(Memory));
        long allocated = _sequences.Values.Sum(s => s.Past.Values.Sum(v => v.GetTensorSizeInBytes() is var b ? (long)b : 0));
        long perToken = _caches.Sum(c =>
        {
            long n = 1;
            for (int i = 0; i < c.Dims.Length; i++) if (i != c.SeqAxis && c.Dims[i] > 0) n *= c.Dims[i];
            return n * (c.Type == TensorElementType.Float ? 4 : 2);
        });
        long perSequence = perToken * Config.MaxLength;
        return new KvMemory(allocated, perSequence, perSequence * Config.MaxBatch, perSequence, Config.MaxLength);
    }

    /// <inheritdoc />
    public float[] Prefill(int sequence, ReadOnlySpan<long> tokens, bool allPositions = false)
    {
        using var _ = _guard.Enter(nameof(Prefill));
        var state = Get(sequence);
        if (tokens.Length == 0) throw new MixAttentionException($"Prefill of sequence {sequence} got no tokens; a prefill needs at least one token.");
        for (int i = 0; i < tokens.Length; i++) MixAttentionSession.CheckToken(tokens[i], VocabSize, Model.InputIdsType, $"Prefill of sequence {sequence}, token {i}");
        if ((long)state.Length + tokens.Length > Config.MaxLength) throw new CacheOverflowException(sequence, state.Length, tokens.Length, Config.MaxLength);
        float[]? all = null;
        float[] last = Array.Empty<float>();
        for (int done = 0; done < tokens.Length; done += Config.PrefillChunk)
        {
            int s = Math.Min(Config.PrefillChunk, tokens.Length - done);
            using var logits = Run(nameof(Prefill), state, tokens.Slice(done, s).ToArray());
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

    private void DecodeInto(IReadOnlyList<int> sequences, IReadOnlyList<long> tokens, float[][]? rows, Span<float> flat)
    {
        using var _ = _guard.Enter(nameof(Decode));
        MixAttentionSession.CheckDecodeArguments(sequences, tokens);
        var states = new State[sequences.Count];
        var seen = new HashSet<int>();
        for (int i = 0; i < sequences.Count; i++)
        {
            int id = sequences[i];
            states[i] = Get(id);
            if (!seen.Add(id)) throw new ArgumentException($"sequence {id} is listed twice in one Decode; each sequence takes one token per step.", nameof(sequences));
            if (states[i].Length == 0) throw MixAttentionSession.NotPrefilled(id);
            MixAttentionSession.CheckToken(tokens[i], VocabSize, Model.InputIdsType, $"Decode of sequence {id}");
            if (states[i].Length + 1 > Config.MaxLength) throw new CacheOverflowException(id, states[i].Length, 1, Config.MaxLength);
        }
        if (rows is null) MixAttentionSession.CheckLogitsDestination(flat.Length, sequences.Count, VocabSize);
        for (int i = 0; i < sequences.Count; i++)
        {
            using var logits = Run(nameof(Decode), states[i], new[] { tokens[i] });
            if (rows is not null) rows[i] = StepIo.Rows(logits, 0, 0, 1);
            else StepIo.RowsInto(logits, 0, 0, 1, flat.Slice(i * VocabSize, VocabSize));
        }
    }

    private OrtValue Run(string operation, State state, long[] ids)
    {
        int s = ids.Length, p = state.Length;
        foreach (var v in _stepInputs) v.Dispose();
        _stepInputs.Clear();
        OrtValue Keep(OrtValue v) { _stepInputs.Add(v); return v; }
        _binding.BindInput(Model.InputIds, Keep(StepIo.Int(Model.InputIdsType, ids, new long[] { 1, s })));
        if (_positionIds is not null)
            _binding.BindInput(_positionIds, Keep(StepIo.Int(_positionType, Enumerable.Range(p, s).Select(x => (long)x).ToArray(), new long[] { 1, s })));
        if (_attentionMask is not null)
            _binding.BindInput(_attentionMask, Keep(_mask.Create(_maskType, 1, p + s)));
        if (_pastLengths is not null)
            _binding.BindInput(_pastLengths, Keep(OrtValue.CreateTensorValueFromMemory(new[] { p }, new long[] { 1 })));
        if (_newLengths is not null)
            _binding.BindInput(_newLengths, Keep(OrtValue.CreateTensorValueFromMemory(new[] { s }, new long[] { 1 })));
        foreach (var c in _caches)
        {
            _binding.BindInput(c.Past, state.Past[c.Past]);
            _binding.BindOutputToDevice(c.Present, Model.CacheMemoryInfo);
        }
        _binding.BindOutputToDevice(Model.Logits, OrtMemoryInfo.DefaultInstance);
        BeforeRun?.Invoke(operation);
        Model.OrtSession.RunWithBinding(_runOptions, _binding);
        var names = _binding.GetOutputNames();
        var outputs = _binding.GetOutputValues(); // elements are moved into the state or returned
        OrtValue? logits = null;
        var presentToPast = _caches.ToDictionary(c => c.Present, c => c.Past);
        int k = 0;
        foreach (var v in outputs)
        {
            var name = names[k++];
            if (name == Model.Logits) logits = v;
            else if (presentToPast.TryGetValue(name, out var past))
            {
                state.Past[past].Dispose();
                state.Past[past] = v;
            }
            else v.Dispose();
        }
        state.Length += s;
        if (VocabSize <= 0 && logits is not null) VocabSize = (int)logits.GetTensorTypeAndShape().Shape[2];
        return logits ?? throw new InvalidOperationException("the logits output was not produced");
    }

    /// <summary>Disposes every sequence's past tensors and the binding, and releases the model. A second call does nothing.</summary>
    public void Dispose() => _guard.Dispose();

    private void ReleaseResources()
    {
        _binding.Dispose();
        foreach (var v in _stepInputs) v.Dispose();
        _stepInputs.Clear();
        foreach (var id in _sequences.Keys.ToList()) Remove(id);
        _runOptions.Dispose();
        Model.Release();
    }
}
