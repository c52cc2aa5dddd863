using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

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
/// </summary>
public sealed class MixAttentionSession : IDecoderSession
{
    private readonly OrtIoBinding _binding;
    private readonly RunOptions _runOptions = new();
    private readonly int?[] _slotSequence;
    private readonly int[] _slotLength;
    private readonly Dictionary<int, int> _slotOf = new();
    private readonly List<OrtValue> _stepInputs = new();
    private readonly TensorElementType _positionType;
    private readonly TensorElementType _maskType;
    private (int First, int Rows) _boundRange = (-1, -1);
    private int _nextId;
    private bool _disposed;

    internal MixAttentionSession(MixAttentionModel model, SessionConfig config)
    {
        Model = model;
        Config = config;
        var plan = model.Plan!;
        Caches = new KvCacheSet(plan, config, model.Options.Device, model.DeviceAllocator(), model.CacheMemoryInfo);
        try
        {
            _binding = model.Session.CreateIoBinding();
        }
        catch
        {
            Caches.Dispose();
            throw;
        }
        _slotSequence = new int?[config.MaxBatch];
        _slotLength = new int[config.MaxBatch];
        var inputs = model.Session.InputMetadata;
        _positionType = plan.PositionIds is { } p ? inputs[p].ElementDataType : TensorElementType.Int64;
        _maskType = plan.AttentionMask is { } m ? inputs[m].ElementDataType : TensorElementType.Int64;
        VocabSize = model.VocabSize;
    }

    /// <inheritdoc />
    public MixAttentionModel Model { get; }
    /// <inheritdoc />
    public SessionConfig Config { get; }
    /// <summary>The caches (owners only), for addresses and byte counts.</summary>
    public KvCacheSet Caches { get; }
    /// <inheritdoc />
    public int VocabSize { get; private set; }
    /// <inheritdoc />
    public IReadOnlyCollection<int> Sequences => _slotOf.Keys;
    /// <inheritdoc />
    public int FreeSlots => _slotSequence.Count(s => s is null);
    /// <summary>Model calls run so far.</summary>
    public long Steps { get; private set; }

    /// <summary>The batch slot of a sequence.</summary>
    public int SlotOf(int sequence) => _slotOf.TryGetValue(sequence, out var s) ? s : throw new MixAttentionException($"sequence {sequence} does not exist (removed, or never added).");

    /// <inheritdoc />
    public int AddSequence()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int slot = Array.IndexOf(_slotSequence, null);
        if (slot < 0) throw new MixAttentionException($"all {Config.MaxBatch} batch slots are in use; remove a sequence first or open the session with a larger MaxBatch.");
        int id = _nextId++;
        _slotSequence[slot] = id;
        _slotLength[slot] = 0;
        _slotOf[id] = slot;
        return id;
    }

    /// <inheritdoc />
    public void RemoveSequence(int sequence)
    {
        int slot = SlotOf(sequence);
        _slotSequence[slot] = null;
        _slotLength[slot] = 0;
        _slotOf.Remove(sequence);
    }

    /// <inheritdoc />
    public void Reset()
    {
        Array.Fill(_slotSequence, null);
        Array.Clear(_slotLength);
        _slotOf.Clear();
    }

    /// <inheritdoc />
    public int Length(int sequence) => _slotLength[SlotOf(sequence)];

    /// <inheritdoc />
    public KvMemory Memory() => Caches.Memory();

    private void CheckCapacity(int sequence, int length, int newTokens)
    {
        if (Caches.GlobalCapacity is { } cap && length + newTokens > cap)
            throw new CacheOverflowException(sequence, length, newTokens, cap);
    }

    /// <inheritdoc />
    public float[] Prefill(int sequence, ReadOnlySpan<long> tokens, bool allPositions = false)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int slot = SlotOf(sequence);
        if (tokens.Length == 0) throw new MixAttentionException("prefill needs at least one token.");
        CheckCapacity(sequence, _slotLength[slot], tokens.Length);
        float[]? all = null;
        float[] last = Array.Empty<float>();
        var chunk = Config.PrefillChunk;
        for (int done = 0; done < tokens.Length; done += chunk)
        {
            int s = Math.Min(chunk, tokens.Length - done);
            var ids = tokens.Slice(done, s).ToArray();
            using var logits = RunStep(slot, 1, s, ids, new[] { _slotLength[slot] }, new[] { s });
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

    /// <inheritdoc />
    public float[][] Decode(IReadOnlyList<int> sequences, IReadOnlyList<long> tokens)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (sequences.Count != tokens.Count) throw new ArgumentException("one token per sequence", nameof(tokens));
        if (sequences.Count == 0) return Array.Empty<float[]>();
        var slots = new int[sequences.Count];
        for (int i = 0; i < slots.Length; i++)
        {
            slots[i] = SlotOf(sequences[i]);
            CheckCapacity(sequences[i], _slotLength[slots[i]], 1);
        }
        if (slots.Distinct().Count() != slots.Length) throw new ArgumentException("a sequence is listed twice", nameof(sequences));
        int first = slots.Min(), rows = slots.Max() - first + 1;
        var ids = new long[rows];
        var past = new int[rows];
        var news = new int[rows];
        bool hasNewLengths = Model.Plan!.NewLengths is not null;
        for (int r = 0; r < rows; r++)
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
        using var logits = RunStep(first, rows, 1, ids, past, news);
        var result = new float[slots.Length][];
        for (int i = 0; i < slots.Length; i++)
        {
            result[i] = StepIo.Rows(logits, slots[i] - first, 0, 1);
            _slotLength[slots[i]]++;
        }
        return result;
    }

    /// <summary>One model call over slots <c>[first, first + rows)</c> with <paramref name="s"/> tokens per row; returns the logits (caller disposes).</summary>
    private OrtValue RunStep(int first, int rows, int s, long[] ids, int[] past, int[] news)
    {
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
            int total = past.Max() + s;
            var mask = new long[rows * total];
            Array.Fill(mask, 1L);
            _binding.BindInput(maskName, Keep(StepIo.Int(_maskType, mask, new long[] { rows, total })));
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
        _binding.BindOutputToDevice(plan.Logits, OrtMemoryInfo.DefaultInstance);
        Model.Session.RunWithBinding(_runOptions, _binding);
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

    /// <summary>Disposes the binding, step inputs and caches (in reverse order of creation).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _binding.Dispose();
        foreach (var v in _stepInputs) v.Dispose();
        _runOptions.Dispose();
        Caches.Dispose();
    }
}
