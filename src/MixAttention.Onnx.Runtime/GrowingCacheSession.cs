using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MixAttention.Onnx.Plan;

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
public sealed class GrowingCacheSession : DecoderSession
{
    /// <summary>One cache input and the output that holds it after a call; the sequence axis is the second last.</summary>
    private sealed record CacheIo(string Past, string Present, long[] Dims, int SeqAxis, TensorElementType Type);

    private readonly List<CacheIo> _caches = new();
    private readonly Dictionary<string, string> _pastOfPresent;
    private readonly Dictionary<int, Dictionary<string, OrtValue>> _pastOf = new(); // by slot: the sequence's past tensors by input name

    internal GrowingCacheSession(MixAttentionModel model, SessionConfig? config) : base(model, config)
    {
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
                _caches.Add(new CacheIo(name, present, dims, dims.Length - 2, meta.ElementDataType));
            }
        }
        _pastOfPresent = _caches.ToDictionary(c => c.Present, c => c.Past);
        string? Find(string? planned, Func<string, bool> match) => planned ?? inputs.Keys.FirstOrDefault(match);
        Open(new StepInputNames(
            PositionIds: Find(plan?.PositionIds, n => n.Contains("position", StringComparison.Ordinal)),
            AttentionMask: plan is null ? inputs.Keys.FirstOrDefault(n => n.Contains("attention_mask", StringComparison.Ordinal)) : plan.AttentionMask,
            PastLengths: plan?.PastLengths ?? (inputs.ContainsKey("past_lengths") ? "past_lengths" : null),
            NewLengths: plan?.NewLengths ?? (inputs.ContainsKey("new_lengths") ? "new_lengths" : null)));

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

    private protected override int? MaxSequenceLength => Config.MaxLength;

    /// <summary>A new sequence starts with empty past tensors (sequence axis 0, other symbolic axes 1).</summary>
    private protected override void OnSequenceAdded(int slot)
    {
        var past = new Dictionary<string, OrtValue>();
        foreach (var c in _caches)
        {
            var dims = (long[])c.Dims.Clone();
            for (int i = 0; i < dims.Length; i++)
                if (dims[i] < 0) dims[i] = i == c.SeqAxis ? 0 : 1;
            dims[c.SeqAxis] = 0;
            past[c.Past] = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, c.Type, dims);
        }
        _pastOf[slot] = past;
    }

    private protected override void OnSequenceRemoved(int slot)
    {
        foreach (var v in _pastOf[slot].Values) v.Dispose();
        _pastOf.Remove(slot);
    }

    /// <inheritdoc />
    public override SessionKvMemory Memory()
    {
        using var _ = Guard.Enter(nameof(Memory));
        long allocated = _pastOf.Values.Sum(p => p.Values.Sum(v => v.GetTensorSizeInBytes() is var b ? (long)b : 0));
        long perToken = _caches.Sum(c =>
        {
            long n = 1;
            for (int i = 0; i < c.Dims.Length; i++) if (i != c.SeqAxis && c.Dims[i] > 0) n *= c.Dims[i];
            return n * (ElementTypes.Size((int)c.Type) ?? 2);
        });
        long perSequence = perToken * Config.MaxLength;
        var byType = _pastOf.Values.SelectMany(p => p.Values).GroupBy(v => ElementTypes.DTypeName((int)v.GetTensorTypeAndShape().ElementDataType))
            .ToDictionary(g => g.Key, g => g.Sum(v => (long)v.GetTensorSizeInBytes()));
        return new SessionKvMemory(allocated, perSequence, perSequence * Config.MaxBatch, perSequence, Config.MaxLength) { AllocatedBytesByDType = byType };
    }

    /// <summary>The past tensors a sequence will feed next (its caches so far), by input name; for calibration (host memory only).</summary>
    internal IReadOnlyDictionary<string, OrtValue> PastOf(int sequence)
    {
        using var _ = Guard.Enter(nameof(PastOf));
        return _pastOf[Slots.SlotOf(sequence)];
    }

    private protected override OrtValue RunPrefillChunk(int slot, long[] ids) => Run(nameof(Prefill), slot, ids);

    /// <summary>One batch-1 call per sequence (their pasts differ in length).</summary>
    private protected override void RunDecode(int[] slots, IReadOnlyList<long> tokens, float[][]? rows, Span<float> flat)
    {
        for (int i = 0; i < slots.Length; i++)
        {
            using var logits = Run(nameof(Decode), slots[i], new[] { tokens[i] });
            Slots.Advance(slots[i], 1);
            CopyRow(logits, 0, i, rows, flat);
        }
    }

    /// <summary>One call of the sequence in <paramref name="slot"/>; its presents become its pasts. Returns the logits (caller disposes).</summary>
    private OrtValue Run(string operation, int slot, long[] ids)
    {
        var past = _pastOf[slot];
        BindStepInputs(1, ids.Length, ids, new[] { Slots.Length(slot) }, new[] { ids.Length });
        foreach (var c in _caches)
        {
            Binding.BindInput(c.Past, past[c.Past]);
            Binding.BindOutputToDevice(c.Present, Model.CacheMemoryInfo);
        }
        return RunModel(operation, OrtMemoryInfo.DefaultInstance, (name, value) =>
        {
            if (!_pastOfPresent.TryGetValue(name, out var input)) return false;
            past[input].Dispose();
            past[input] = value;
            return true;
        });
    }

    private protected override void ReleaseState()
    {
        foreach (var slot in _pastOf.Keys.ToList()) OnSequenceRemoved(slot);
    }
}
