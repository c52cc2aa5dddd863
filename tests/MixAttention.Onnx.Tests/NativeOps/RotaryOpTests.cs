using Microsoft.ML.OnnxRuntime;
using static MixAttention.Onnx.Tests.NativeOps.OpRunner;

namespace MixAttention.Onnx.Tests.NativeOps;

/// <summary>
/// The ops' own rotary (cos_cache / sin_cache inputs, docs/ops.md "Rotary"): the same graph fed raw queries and keys
/// must equal the plain ops fed queries and keys rotated here at positions past_lengths + s — outputs and the cached
/// (rotated) keys — for prefill, decode, padding rows, a ring that wraps, both pair layouts and partial rotary.
/// </summary>
[TestClass]
public sealed class RotaryOpTests
{
    private const int B = 2, Hq = 4, Hkv = 2, D = 8, W = 4, M = 40;

    private static (float[] Cos, float[] Sin) Caches(int rotaryDim)
    {
        int half = rotaryDim / 2;
        var cos = new float[M * half];
        var sin = new float[M * half];
        for (int p = 0; p < M; p++)
            for (int i = 0; i < half; i++)
            {
                double a = p * Math.Pow(10000, -2.0 * i / rotaryDim);
                cos[p * half + i] = (float)Math.Cos(a);
                sin[p * half + i] = (float)Math.Sin(a);
            }
        return (cos, sin);
    }

    /// <summary>x [B, S, heads·D] rotated at positions past[b] + s for s &lt; n[b]; padding rows unchanged.</summary>
    private static float[] Rotate(float[] x, int S, int heads, int[] past, int[] n, float[] cos, float[] sin, int rotaryDim, bool interleaved)
    {
        var y = (float[])x.Clone();
        int half = rotaryDim / 2;
        for (int b = 0; b < B; b++)
            for (int s = 0; s < n[b]; s++)
                for (int h = 0; h < heads; h++)
                {
                    int row = ((b * S + s) * heads + h) * D, pos = past[b] + s;
                    for (int i = 0; i < half; i++)
                    {
                        int a = interleaved ? 2 * i : i, c = interleaved ? 2 * i + 1 : i + half;
                        float cv = cos[pos * half + i], sv = sin[pos * half + i];
                        y[row + a] = x[row + a] * cv - x[row + c] * sv;
                        y[row + c] = x[row + c] * cv + x[row + a] * sv;
                    }
                }
        return y;
    }

    [TestMethod]
    [DataRow(false, D, DisplayName = "half-split pairs")]
    [DataRow(true, D, DisplayName = "interleaved pairs")]
    [DataRow(false, 4, DisplayName = "partial rotary R=4 of D=8")]
    public void RotaryInsideTheOpsEqualsRotatingTheInputs(bool interleaved, int rotaryDim)
    {
        int C = W + 3 - 1;  // a ring with a reader: W + chunk - 1
        using var fused = NativeOpModels.Session(NativeOpModels.RotaryOwnerThenReader(new(Hq, Hkv, W), new(Hq, Hkv, W), interleaved));
        using var plain = NativeOpModels.Session(NativeOpModels.OwnerThenReaderWithNewLengths(new(Hq, Hkv, W), new(Hq, Hkv, W)));
        var (cos, sin) = Caches(rotaryDim);
        var rng = new Random(rotaryDim + (interleaved ? 100 : 0));
        var fusedKey = new float[B * Hkv * C * D];
        var fusedValue = new float[B * Hkv * C * D];
        var plainKey = new float[B * Hkv * C * D];
        var plainValue = new float[B * Hkv * C * D];
        int[] past = [0, 2];
        // Prefill chunks, decode steps past the ring's wrap, a padded step (sequence 1 sits one out).
        foreach (var (S, n) in new[] { (3, new[] { 3, 2 }), (3, new[] { 3, 3 }), (1, new[] { 1, 1 }), (1, new[] { 1, 0 }), (1, new[] { 1, 1 }), (2, new[] { 2, 1 }) })
        {
            var q = AttentionReference.Random(rng, B * S * Hq * D);
            var rq = AttentionReference.Random(rng, B * S * Hq * D);
            var k = AttentionReference.Random(rng, B * S * Hkv * D);
            var v = AttentionReference.Random(rng, B * S * Hkv * D);
            var f = Run(fused, F("query", q, B, S, Hq * D), F("key", k, B, S, Hkv * D), F("value", v, B, S, Hkv * D),
                F("past_key", fusedKey, B, Hkv, C, D), F("past_value", fusedValue, B, Hkv, C, D), I("past_lengths", past),
                I("new_lengths", n), F("reader_query", rq, B, S, Hq * D), F("cos_cache", cos, M, rotaryDim / 2), F("sin_cache", sin, M, rotaryDim / 2));
            var p = Run(plain, F("query", Rotate(q, S, Hq, past, n, cos, sin, rotaryDim, interleaved), B, S, Hq * D),
                F("key", Rotate(k, S, Hkv, past, n, cos, sin, rotaryDim, interleaved), B, S, Hkv * D), F("value", v, B, S, Hkv * D),
                F("past_key", plainKey, B, Hkv, C, D), F("past_value", plainValue, B, Hkv, C, D), I("past_lengths", past),
                I("new_lengths", n), F("reader_query", Rotate(rq, S, Hq, past, n, cos, sin, rotaryDim, interleaved), B, S, Hq * D));
            foreach (var name in new[] { "output", "reader_output", "present_key", "present_value" })
                AttentionReference.AssertClose(p[name], f[name], 1e-5, $"{name} at past [{past[0]}, {past[1]}]");
            (fusedKey, fusedValue, plainKey, plainValue) = (f["present_key"], f["present_value"], p["present_key"], p["present_value"]);
            for (int b = 0; b < B; b++) past[b] += n[b];
        }
    }

    private static OnnxRuntimeException RunBroken(bool withCos, bool withSin, int rotaryHalf, int[] past)
    {
        const int S = 1, C = W;
        using var session = NativeOpModels.Session(NativeOpModels.RotaryOwnerThenReader(new(Hq, Hkv, W), new(Hq, Hkv, W), false, withCos, withSin));
        var inputs = new List<Input>
        {
            F("query", new float[B * S * Hq * D], B, S, Hq * D), F("key", new float[B * S * Hkv * D], B, S, Hkv * D),
            F("value", new float[B * S * Hkv * D], B, S, Hkv * D), F("past_key", new float[B * Hkv * C * D], B, Hkv, C, D),
            F("past_value", new float[B * Hkv * C * D], B, Hkv, C, D), I("past_lengths", past), I("new_lengths", [1, 1]),
            F("reader_query", new float[B * S * Hq * D], B, S, Hq * D),
        };
        if (withCos) inputs.Add(F("cos_cache", new float[M * rotaryHalf], M, rotaryHalf));
        if (withSin) inputs.Add(F("sin_cache", new float[M * rotaryHalf], M, rotaryHalf));
        return Assert.ThrowsExactly<OnnxRuntimeException>(() => Run(session, [.. inputs]));
    }

    [TestMethod]
    public void CosWithoutSinIsRejected()
    {
        var ex = RunBroken(withCos: true, withSin: false, D / 2, [0, 0]);
        StringAssert.Contains(ex.Message, "'cos_cache' and 'sin_cache' must be given together");
    }

    [TestMethod]
    public void RotaryWiderThanTheHeadIsRejected()
    {
        var ex = RunBroken(true, true, D / 2 + 1, [0, 0]);
        StringAssert.Contains(ex.Message, "'cos_cache' has shape [40, 5]");
        StringAssert.Contains(ex.Message, "head size D = 8");
    }

    [TestMethod]
    public void PositionsPastTheCachesAreRejected()
    {
        var ex = RunBroken(true, true, D / 2, [3, M]);
        StringAssert.Contains(ex.Message, "sequence 1 reaches position 40");
    }
}
