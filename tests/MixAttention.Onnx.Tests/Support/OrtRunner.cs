using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace MixAttention.Onnx.Tests.Support;

/// <summary>Runs a model once on ORT CPU with deterministic inputs made from its declared input shapes.</summary>
public static class OrtRunner
{
    /// <summary>
    /// Values for symbolic dims by name: batch 2, new tokens 3, past 4, total 7. Inputs named like
    /// input_ids get token ids, masks get ones, position ids get positions, everything else seeded noise.
    /// </summary>
    public static Dictionary<string, float[]> RunWithSyntheticInputs(string modelPath, int seed = 1, string? customOpLibrary = null, int batch = 2)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        if (customOpLibrary is not null) options.RegisterCustomOpLibrary(customOpLibrary);
        using var session = new InferenceSession(modelPath, options);
        var rng = new Random(seed);
        const int seq = 3, past = 4;
        var inputs = new List<NamedOnnxValue>();
        foreach (var (name, meta) in session.InputMetadata)
        {
            var dims = meta.Dimensions.Select((d, i) => d > 0 ? d : SymbolicDim(meta.SymbolicDimensions[i], name, i, batch, seq, past)).ToArray();
            int count = dims.Aggregate(1, (a, b) => a * b);
            if (meta.ElementType == typeof(long))
            {
                var data = new long[count];
                for (int i = 0; i < count; i++)
                    data[i] = name.Contains("mask") ? 1 : name.Contains("position") ? past + i % dims[^1] : rng.Next(0, 50);
                inputs.Add(NamedOnnxValue.CreateFromTensor(name, new DenseTensor<long>(data, dims)));
            }
            else if (meta.ElementType == typeof(int))
            {
                var data = Enumerable.Range(0, count).Select(i => name.Contains("mask") ? 1 : rng.Next(0, 50)).ToArray();
                inputs.Add(NamedOnnxValue.CreateFromTensor(name, new DenseTensor<int>(data, dims)));
            }
            else if (meta.ElementType == typeof(Float16))
            {
                var data = Enumerable.Range(0, count).Select(_ => (Float16)(float)(rng.NextDouble() - 0.5)).ToArray();
                inputs.Add(NamedOnnxValue.CreateFromTensor(name, new DenseTensor<Float16>(data, dims)));
            }
            else
            {
                var data = Enumerable.Range(0, count).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
                inputs.Add(NamedOnnxValue.CreateFromTensor(name, new DenseTensor<float>(data, dims)));
            }
        }
        using var results = session.Run(inputs);
        var outputs = new Dictionary<string, float[]>();
        foreach (var r in results)
            outputs[r.Name] = r.Value switch
            {
                DenseTensor<float> f => f.Buffer.ToArray(),
                DenseTensor<Float16> h => h.Buffer.ToArray().Select(x => (float)x).ToArray(),
                _ => r.AsEnumerable<float>().ToArray(),
            };
        return outputs;
    }

    private static int SymbolicDim(string symbol, string input, int axis, int batch, int seq, int past)
    {
        var s = symbol.ToLowerInvariant();
        if (s.Contains("batch")) return batch;
        if (s.Contains("past")) return past;
        if (s.Contains("total") || s.Contains("all") || (input.Contains("mask") && axis == 1)) return past + seq;
        if (axis == 0) return batch;
        return seq;
    }
}
