using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// Decoding with an unconverted export (past/present concatenation: the cache grows by the step's tokens each call)
/// or a converted model whose caches grow (reference backend). Each sequence keeps its own past tensors on the
/// session's device and runs in its own batch-1 call, so sequences of any lengths can be added and removed;
/// the present outputs of one call are the past inputs of the next (no host copy, but ORT allocates new tensors
/// each step — the cost the converted, in-place driver removes). For comparisons and baselines.
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
    private readonly string? _positionIds, _attentionMask, _pastLengths, _newLengths;
    private readonly TensorElementType _positionType, _maskType;
    private int _nextId;
    private bool _disposed;

    internal PlainDecoderSession(MixAttentionModel model, SessionConfig config)
    {
        Model = model;
        Config = config;
        VocabSize = model.VocabSize;
        var inputs = model.Session.InputMetadata;
        var outputs = model.Session.OutputMetadata;
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
        _binding = model.Session.CreateIoBinding();

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
    public IReadOnlyCollection<int> Sequences => _sequences.Keys;
    /// <inheritdoc />
    public int FreeSlots => Config.MaxBatch - _sequences.Count;

    /// <inheritdoc />
    public int AddSequence()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (FreeSlots == 0) throw new MixAttentionException($"all {Config.MaxBatch} batch slots are in use; remove a sequence first or open the session with a larger MaxBatch.");
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

    private State Get(int sequence) => _sequences.TryGetValue(sequence, out var s) ? s : throw new MixAttentionException($"sequence {sequence} does not exist (removed, or never added).");

    /// <inheritdoc />
    public void RemoveSequence(int sequence)
    {
        var s = Get(sequence);
        foreach (var v in s.Past.Values) v.Dispose();
        _sequences.Remove(sequence);
    }

    /// <inheritdoc />
    public void Reset()
    {
        foreach (var id in _sequences.Keys.ToList()) RemoveSequence(id);
    }

    /// <inheritdoc />
    public int Length(int sequence) => Get(sequence).Length;

    /// <inheritdoc />
    public KvMemory Memory()
    {
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
        ObjectDisposedException.ThrowIf(_disposed, this);
        var state = Get(sequence);
        if (tokens.Length == 0) throw new MixAttentionException("prefill needs at least one token.");
        float[]? all = null;
        float[] last = Array.Empty<float>();
        for (int done = 0; done < tokens.Length; done += Config.PrefillChunk)
        {
            int s = Math.Min(Config.PrefillChunk, tokens.Length - done);
            using var logits = Run(state, tokens.Slice(done, s).ToArray());
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
        if (sequences.Count != tokens.Count) throw new ArgumentException("one token per sequence", nameof(tokens));
        var result = new float[sequences.Count][];
        for (int i = 0; i < sequences.Count; i++)
        {
            using var logits = Run(Get(sequences[i]), new[] { tokens[i] });
            result[i] = StepIo.Rows(logits, 0, 0, 1);
        }
        return result;
    }

    private OrtValue Run(State state, long[] ids)
    {
        int s = ids.Length, p = state.Length;
        foreach (var v in _stepInputs) v.Dispose();
        _stepInputs.Clear();
        OrtValue Keep(OrtValue v) { _stepInputs.Add(v); return v; }
        _binding.BindInput(Model.InputIds, Keep(StepIo.Int(Model.InputIdsType, ids, new long[] { 1, s })));
        if (_positionIds is not null)
            _binding.BindInput(_positionIds, Keep(StepIo.Int(_positionType, Enumerable.Range(p, s).Select(x => (long)x).ToArray(), new long[] { 1, s })));
        if (_attentionMask is not null)
            _binding.BindInput(_attentionMask, Keep(StepIo.Int(_maskType, Enumerable.Repeat(1L, p + s).ToArray(), new long[] { 1, p + s })));
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
        Model.Session.RunWithBinding(_runOptions, _binding);
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

    /// <summary>Disposes every sequence's past tensors and the binding.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _binding.Dispose();
        foreach (var v in _stepInputs) v.Dispose();
        Reset();
        _runOptions.Dispose();
    }
}
