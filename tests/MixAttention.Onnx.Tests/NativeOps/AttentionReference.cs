namespace MixAttention.Onnx.Tests.NativeOps;

/// <summary>
/// Plain attention in double precision over per-sequence K/V histories indexed by absolute position,
/// with the window convention of docs/ops.md (a query at p sees max(0, p-W+1) .. p).
/// </summary>
internal sealed class AttentionReference
{
    private readonly List<float[]>[,] _keys, _values; // [b, kv head] -> rows by position

    public AttentionReference(int batch, int kvHeads, int headDim)
    {
        Batch = batch;
        KvHeads = kvHeads;
        HeadDim = headDim;
        _keys = new List<float[]>[batch, kvHeads];
        _values = new List<float[]>[batch, kvHeads];
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < kvHeads; h++)
            {
                _keys[b, h] = [];
                _values[b, h] = [];
            }
    }

    public int Batch { get; }
    public int KvHeads { get; }
    public int HeadDim { get; }

    public int Length(int b) => _keys[b, 0].Count;

    public float[] Key(int b, int h, int pos) => _keys[b, h][pos];
    public float[] Value(int b, int h, int pos) => _values[b, h][pos];

    /// <summary>Appends tokens s &lt; count of a chunk key/value [B, S, Hkv*D] to sequence b.</summary>
    public void Append(int b, float[] key, float[] value, int seq, int count)
    {
        int d = HeadDim;
        for (int s = 0; s < count; s++)
            for (int h = 0; h < KvHeads; h++)
            {
                int off = ((b * seq + s) * KvHeads + h) * d;
                _keys[b, h].Add(key[off..(off + d)]);
                _values[b, h].Add(value[off..(off + d)]);
            }
    }

    /// <summary>Output [B, S, Hq*D] for queries at positions past[b] + s (s &lt; count[b]; the rest zeros).</summary>
    public float[] Attend(float[] query, int seq, int numHeads, int window, float scale, float softcap, int[] past, int[] count)
    {
        int d = HeadDim, group = numHeads / KvHeads;
        if (scale == 0) scale = 1f / MathF.Sqrt(d);
        var output = new float[Batch * seq * numHeads * d];
        for (int b = 0; b < Batch; b++)
            for (int s = 0; s < count[b]; s++)
            {
                int p = past[b] + s;
                int lo = window > 0 ? Math.Max(0, p - window + 1) : 0;
                for (int hq = 0; hq < numHeads; hq++)
                {
                    int h = hq / group, qoff = ((b * seq + s) * numHeads + hq) * d;
                    var scores = new double[p - lo + 1];
                    for (int j = lo; j <= p; j++)
                    {
                        double dot = 0;
                        for (int i = 0; i < d; i++) dot += query[qoff + i] * (double)_keys[b, h][j][i];
                        dot *= scale;
                        if (softcap > 0) dot = softcap * Math.Tanh(dot / softcap);
                        scores[j - lo] = dot;
                    }
                    double max = scores.Max(), sum = 0;
                    for (int j = 0; j < scores.Length; j++) sum += scores[j] = Math.Exp(scores[j] - max);
                    for (int i = 0; i < d; i++)
                    {
                        double acc = 0;
                        for (int j = lo; j <= p; j++) acc += scores[j - lo] / sum * _values[b, h][j][i];
                        output[qoff + i] = (float)acc;
                    }
                }
            }
        return output;
    }

    public static float[] Random(Random rng, int count)
    {
        var v = new float[count];
        for (int i = 0; i < count; i++) v[i] = (float)(rng.NextDouble() * 2 - 1);
        return v;
    }

    /// <summary>Rounds every value through fp16, so the reference sees what an fp16 op sees.</summary>
    public static float[] RoundToHalf(float[] v) => v.Select(x => (float)(Half)x).ToArray();

    public static void AssertClose(float[] expected, ReadOnlySpan<float> actual, double tolerance, string what)
    {
        Assert.AreEqual(expected.Length, actual.Length, $"{what}: length");
        for (int i = 0; i < expected.Length; i++)
            if (!(Math.Abs(expected[i] - actual[i]) <= tolerance * Math.Max(1, Math.Abs(expected[i]))))
                Assert.Fail($"{what}: element {i} expected {expected[i]} got {actual[i]} (tolerance {tolerance})");
    }
}
