using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MixAttention.Onnx.Lowering;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Tests.Support;

/// <summary>
/// A deliberately plain decode loop for tests: prefill, then one token at a time, feeding every present
/// output back as the next past input. Runs unconverted exports (growing past/present, packed or not) and
/// converted models (caches sized from the cache plan, past_lengths). No IO binding: correctness only.
/// </summary>
public sealed class DecoderRunner : IDisposable
{
    private readonly InferenceSession _session;
    private readonly CachePlan? _plan;
    private readonly SessionOptions _options;

    public DecoderRunner(string modelPath, string? customOpLibrary = null)
    {
        _options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL, IntraOpNumThreads = 1 };
        if (customOpLibrary is not null) _options.RegisterCustomOpLibrary(customOpLibrary);
        _session = new InferenceSession(modelPath, _options);
        _plan = CachePlan.FromModel(OnnxModel.Load(modelPath).Proto);
    }

    /// <summary>
    /// Logits [B, T, V] for <paramref name="ids"/> [B, T]: steps of <paramref name="prefill"/> tokens first,
    /// then <paramref name="step"/> tokens at a time.
    /// </summary>
    public float[] Run(long[] ids, int batch, int length, int prefill, int step = 1, int maxLength = 0)
    {
        if (maxLength == 0) maxLength = length;
        var caches = InitialCaches(batch, maxLength, Math.Max(prefill, step));
        float[]? all = null;
        int vocab = 0;
        int done = 0;
        while (done < length)
        {
            int s = Math.Min(done == 0 ? prefill : step, length - done);
            var inputs = new List<NamedOnnxValue>();
            var chunk = new long[batch * s];
            for (int b = 0; b < batch; b++)
                for (int i = 0; i < s; i++) chunk[b * s + i] = ids[b * length + done + i];
            var idsName = _plan?.InputIds ?? "input_ids";
            if (_session.InputMetadata[idsName].ElementType == typeof(int))
                inputs.Add(NamedOnnxValue.CreateFromTensor(idsName, new DenseTensor<int>(chunk.Select(x => (int)x).ToArray(), new[] { batch, s })));
            else
                inputs.Add(NamedOnnxValue.CreateFromTensor(idsName, new DenseTensor<long>(chunk, new[] { batch, s })));
            foreach (var (name, meta) in _session.InputMetadata)
            {
                if (name.Contains("position") && meta.ElementType == typeof(int))
                {
                    var pos = new int[batch * s];
                    for (int b = 0; b < batch; b++) for (int i = 0; i < s; i++) pos[b * s + i] = done + i;
                    inputs.Add(NamedOnnxValue.CreateFromTensor(name, new DenseTensor<int>(pos, new[] { batch, s })));
                }
                else if (name.Contains("position"))
                {
                    var pos = new long[batch * s];
                    for (int b = 0; b < batch; b++) for (int i = 0; i < s; i++) pos[b * s + i] = done + i;
                    inputs.Add(NamedOnnxValue.CreateFromTensor(name, new DenseTensor<long>(pos, new[] { batch, s })));
                }
                else if (name.Contains("attention_mask"))
                {
                    var shape = new[] { batch, done + s };
                    if (meta.ElementType == typeof(int))
                        inputs.Add(NamedOnnxValue.CreateFromTensor(name, new DenseTensor<int>(Enumerable.Repeat(1, batch * (done + s)).ToArray(), shape)));
                    else
                        inputs.Add(NamedOnnxValue.CreateFromTensor(name, new DenseTensor<long>(Enumerable.Repeat(1L, batch * (done + s)).ToArray(), shape)));
                }
                else if (name == "new_lengths")
                    inputs.Add(NamedOnnxValue.CreateFromTensor(name, new DenseTensor<int>(Enumerable.Repeat(s, batch).ToArray(), new[] { batch })));
                else if (name == "past_lengths")
                    inputs.Add(NamedOnnxValue.CreateFromTensor(name, new DenseTensor<int>(Enumerable.Repeat(done, batch).ToArray(), new[] { batch })));
            }
            foreach (var (name, value) in caches)
                inputs.Add(NamedOnnxValue.CreateFromTensor(name, value));

            using var results = _session.Run(inputs);
            var next = new Dictionary<string, DenseTensor<float>>();
            foreach (var r in results)
            {
                if (r.Name == (_plan?.Logits ?? "logits"))
                {
                    var logits = (DenseTensor<float>)r.Value;
                    vocab = logits.Dimensions[2];
                    all ??= new float[batch * length * vocab];
                    for (int b = 0; b < batch; b++)
                        for (int i = 0; i < s; i++)
                            for (int v = 0; v < vocab; v++)
                                all[((long)b * length + done + i) * vocab + v] = logits[b, i, v];
                }
                else
                {
                    var pastName = PastNameFor(r.Name);
                    if (pastName is not null) next[pastName] = ((DenseTensor<float>)r.Value).Clone() as DenseTensor<float> ?? throw new InvalidOperationException();
                }
            }
            foreach (var (k, v) in next) caches[k] = v;
            done += s;
        }
        return all!;
    }

    private string? PastNameFor(string present)
    {
        if (_plan is not null)
        {
            foreach (var c in _plan.Caches)
            {
                if (c.PresentKey == present) return c.PastKey;
                if (c.PresentValue == present) return c.PastValue;
            }
            return null;
        }
        if (present.StartsWith("present.", StringComparison.Ordinal)) return "past_key_values." + present["present.".Length..];
        if (present.StartsWith("present_", StringComparison.Ordinal)) return "past_" + present["present_".Length..];
        return null;
    }

    private Dictionary<string, DenseTensor<float>> InitialCaches(int batch, int maxLength, int chunk)
    {
        var caches = new Dictionary<string, DenseTensor<float>>();
        foreach (var (name, meta) in _session.InputMetadata)
        {
            if (!name.StartsWith("past", StringComparison.Ordinal) || name == "past_lengths") continue;
            var dims = meta.Dimensions.ToArray();
            int seqAxis = dims.Length - 2;
            int capacity = 0;
            if (_plan is not null)
            {
                var entry = _plan.Caches.First(c => c.PastKey == name || c.PastValue == name);
                capacity = entry.Capacity switch
                {
                    CapacityRule.Window => entry.Window + (entry.Readers.Count > 0 ? chunk - 1 : 0),
                    CapacityRule.MaxLength => maxLength,
                    _ => 0,
                };
            }
            for (int i = 0; i < dims.Length; i++)
                if (dims[i] < 0) dims[i] = i == seqAxis ? capacity : (dims.Length == 5 && i == 1) || (dims.Length == 4 && i == 0) ? batch : 1;
            // Fill with NaN where a cache slot should never be read: a wrong index then poisons the logits.
            var data = new float[dims.Aggregate(1, (a, b) => a * b)];
            Array.Fill(data, capacity > 0 ? float.NaN : 0f);
            caches[name] = new DenseTensor<float>(data, dims);
        }
        return caches;
    }

    public void Dispose()
    {
        _session.Dispose();
        _options.Dispose();
    }
}
