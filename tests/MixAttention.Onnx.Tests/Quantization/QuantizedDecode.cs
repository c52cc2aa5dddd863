using MixAttention.Onnx.Runtime;

namespace MixAttention.Onnx.Tests.Quantization;

/// <summary>
/// Teacher-forced logits through the product's runtime (<see cref="MixAttentionModel"/>): in-place int8/fp8 caches
/// for the ops and ort-gqa backends, growing ones for the reference backend. Prefill <c>prefill</c> tokens, then one at a time.
/// </summary>
internal static class QuantizedDecode
{
    /// <summary>Logits [T, V] of one sequence (rows for positions 0..T-1).</summary>
    public static float[][] Logits(string model, long[] tokens, int prefill = 5, int prefillChunk = 4)
    {
        using var m = MixAttentionModel.Open(model, new ModelOptions { IntraOpNumThreads = 1 });
        using var session = m.CreateSession(new SessionConfig { MaxBatch = 1, MaxLength = tokens.Length, PrefillChunk = prefillChunk });
        int seq = session.AddSequence();
        var rows = new List<float[]>();
        var first = session.Prefill(seq, tokens.AsSpan(0, prefill), allPositions: true);
        int vocab = first.Length / prefill;
        for (int i = 0; i < prefill; i++) rows.Add(first.AsSpan(i * vocab, vocab).ToArray());
        for (int t = prefill; t < tokens.Length; t++)
            rows.Add(session.Decode(new[] { seq }, new[] { tokens[t] })[0]);
        return rows.ToArray();
    }

    /// <summary>max |a − b| over every position and logit (∞ for a NaN).</summary>
    public static float MaxAbsDiff(float[][] a, float[][] b)
    {
        float max = 0;
        for (int t = 0; t < a.Length; t++)
            for (int v = 0; v < a[t].Length; v++)
            {
                float d = Math.Abs(a[t][v] - b[t][v]);
                max = float.IsNaN(d) ? float.PositiveInfinity : Math.Max(max, d);
            }
        return max;
    }

    /// <summary>Fraction of positions whose arg-max agrees.</summary>
    public static double Top1Agreement(float[][] a, float[][] b) =>
        (double)Enumerable.Range(0, a.Length).Count(t => Sampler.ArgMax(a[t]) == Sampler.ArgMax(b[t])) / a.Length;
}
