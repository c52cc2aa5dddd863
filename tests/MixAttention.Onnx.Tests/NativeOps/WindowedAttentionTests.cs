using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using static MixAttention.Onnx.Tests.NativeOps.OpRunner;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Tests.NativeOps;

/// <summary>WindowedAttention (owner) through ORT's CPU session against the C# reference.</summary>
[TestClass]
public sealed class WindowedAttentionTests
{
    private const int B = 2, Hq = 4, Hkv = 2, D = 16;

    /// <summary>Checks every resident position of every sequence sits in slot pos mod C.</summary>
    internal static void AssertCacheHolds(AttentionReference reference, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int capacity, string what)
    {
        int d = reference.HeadDim;
        for (int b = 0; b < reference.Batch; b++)
            for (int h = 0; h < reference.KvHeads; h++)
                for (int p = Math.Max(0, reference.Length(b) - capacity); p < reference.Length(b); p++)
                {
                    int off = ((b * reference.KvHeads + h) * capacity + p % capacity) * d;
                    for (int i = 0; i < d; i++)
                    {
                        if (keys[off + i] != reference.Key(b, h, p)[i] || values[off + i] != reference.Value(b, h, p)[i])
                            Assert.Fail($"{what}: cache slot {p % capacity} of b={b} h={h} does not hold position {p}");
                    }
                }
    }

    [TestMethod]
    public void PrefillLongerThanTheRingThenDecodeMatchesReference()
    {
        const int W = 5, C = 6;
        var attrs = new NativeOpModels.Attrs(Hq, Hkv, W, Softcap: 3f);
        using var session = NativeOpModels.Session(NativeOpModels.Owner(NativeOpModels.Float, attrs, withNewLengths: true));
        var rng = new Random(1);
        var reference = new AttentionReference(B, Hkv, D);
        var pastKey = new float[B * Hkv * C * D];
        var pastValue = new float[B * Hkv * C * D];
        int[] past = [0, 0];
        // Prefill S = 9 > C (sequence 1 padded to 4 real tokens), then 3*C + 2 decode steps.
        var steps = new List<(int S, int[] N)> { (9, [9, 4]) };
        for (int i = 0; i < 3 * C + 2; i++) steps.Add((1, [1, 1]));
        foreach (var (S, n) in steps)
        {
            var q = AttentionReference.Random(rng, B * S * Hq * D);
            var k = AttentionReference.Random(rng, B * S * Hkv * D);
            var v = AttentionReference.Random(rng, B * S * Hkv * D);
            var r = Run(session, F("query", q, B, S, Hq * D), F("key", k, B, S, Hkv * D), F("value", v, B, S, Hkv * D),
                F("past_key", pastKey, B, Hkv, C, D), F("past_value", pastValue, B, Hkv, C, D), I("past_lengths", past), I("new_lengths", n));
            for (int b = 0; b < B; b++) reference.Append(b, k, v, S, n[b]);
            var expected = reference.Attend(q, S, Hq, W, 0f, 3f, past, n);
            AttentionReference.AssertClose(expected, r["output"], 1e-4, $"output at past [{string.Join(",", past)}]");
            AssertCacheHolds(reference, r["present_key"], r["present_value"], C, "present");
            pastKey = r["present_key"];
            pastValue = r["present_value"];
            for (int b = 0; b < B; b++) past[b] += n[b];
        }
        Assert.IsTrue(past.Min() >= 3 * C, "the ring wrapped at least three times");
    }

    [TestMethod]
    public void IoBindingUpdatesTheBoundCacheInPlace()
    {
        const int W = 4, C = 4;
        var attrs = new NativeOpModels.Attrs(Hq, Hkv, W);
        // require_inplace: the op fails instead of copying when present is not the past buffer.
        using var session = NativeOpModels.Session(NativeOpModels.Owner(NativeOpModels.Float, attrs, withNewLengths: true),
            new Dictionary<string, string> { [OpSpec.ConfigRequireInPlace] = "1" });
        var rng = new Random(2);
        var reference = new AttentionReference(B, Hkv, D);
        var cacheK = new float[B * Hkv * C * D];
        var cacheV = new float[B * Hkv * C * D];
        using var kValue = OrtValue.CreateTensorValueFromMemory(cacheK, [B, Hkv, C, D]);
        using var vValue = OrtValue.CreateTensorValueFromMemory(cacheV, [B, Hkv, C, D]);
        using var binding = session.CreateIoBinding();
        using var runOptions = new RunOptions();
        int[] past = [0, 0];
        var steps = new List<(int S, int[] N)> { (6, [2, 6]) };
        for (int i = 0; i < 3 * C + 3; i++) steps.Add((1, [1, 1]));
        foreach (var (S, n) in steps)
        {
            var q = AttentionReference.Random(rng, B * S * Hq * D);
            var k = AttentionReference.Random(rng, B * S * Hkv * D);
            var v = AttentionReference.Random(rng, B * S * Hkv * D);
            var output = new float[B * S * Hq * D];
            using var qv = OrtValue.CreateTensorValueFromMemory(q, [B, S, Hq * D]);
            using var kv = OrtValue.CreateTensorValueFromMemory(k, [B, S, Hkv * D]);
            using var vv = OrtValue.CreateTensorValueFromMemory(v, [B, S, Hkv * D]);
            using var pl = OrtValue.CreateTensorValueFromMemory((int[])past.Clone(), [B]);
            using var nl = OrtValue.CreateTensorValueFromMemory(n, [B]);
            using var ov = OrtValue.CreateTensorValueFromMemory(output, [B, S, Hq * D]);
            binding.BindInput("query", qv);
            binding.BindInput("key", kv);
            binding.BindInput("value", vv);
            binding.BindInput("past_key", kValue);
            binding.BindInput("past_value", vValue);
            binding.BindInput("past_lengths", pl);
            binding.BindInput("new_lengths", nl);
            binding.BindOutput("output", ov);
            binding.BindOutput("present_key", kValue);   // same OrtValue as past_key
            binding.BindOutput("present_value", vValue);
            session.RunWithBinding(runOptions, binding);

            for (int b = 0; b < B; b++) reference.Append(b, k, v, S, n[b]);
            var expected = reference.Attend(q, S, Hq, W, 0f, 0f, past, n);
            AttentionReference.AssertClose(expected, output, 1e-4, $"output at past [{string.Join(",", past)}]");
            // The cache OrtValue still wraps our array, and the array itself holds the update.
            Assert.IsTrue(Unsafe.AreSame(ref MemoryMarshal.GetReference(kValue.GetTensorMutableRawData()), ref Unsafe.As<float, byte>(ref cacheK[0])));
            AssertCacheHolds(reference, cacheK, cacheV, C, "bound cache");
            for (int b = 0; b < B; b++) past[b] += n[b];
        }
        Assert.IsTrue(past.Min() >= 3 * C);
    }

    [TestMethod]
    public void RequireInPlaceRejectsADifferentPresentBuffer()
    {
        const int W = 4, C = 4, S = 1;
        using var session = NativeOpModels.Session(NativeOpModels.Owner(NativeOpModels.Float, new(Hq, Hkv, W)),
            new Dictionary<string, string> { [OpSpec.ConfigRequireInPlace] = "1" });
        var ex = Assert.ThrowsExactly<OnnxRuntimeException>(() => Run(session,
            F("query", new float[B * S * Hq * D], B, S, Hq * D), F("key", new float[B * S * Hkv * D], B, S, Hkv * D),
            F("value", new float[B * S * Hkv * D], B, S, Hkv * D), F("past_key", new float[B * Hkv * C * D], B, Hkv, C, D),
            F("past_value", new float[B * Hkv * C * D], B, Hkv, C, D), I("past_lengths", [3, 0])));
        StringAssert.Contains(ex.Message, "'present_key'");
    }

    [TestMethod]
    public void Fp16InPlaceDecodeMatchesReference()
    {
        const int W = 3, C = 4;
        var attrs = new NativeOpModels.Attrs(Hq, Hkv, W, Scale: 0.3f);
        using var session = NativeOpModels.Session(NativeOpModels.Owner(NativeOpModels.Float16, attrs));
        var rng = new Random(3);
        var reference = new AttentionReference(B, Hkv, D);
        var cacheK = new Float16[B * Hkv * C * D];
        var cacheV = new Float16[B * Hkv * C * D];
        using var kValue = OrtValue.CreateTensorValueFromMemory(cacheK, [B, Hkv, C, D]);
        using var vValue = OrtValue.CreateTensorValueFromMemory(cacheV, [B, Hkv, C, D]);
        using var binding = session.CreateIoBinding();
        using var runOptions = new RunOptions();
        int[] past = [0, 0];
        foreach (int S in new[] { 5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 })
        {
            var q = AttentionReference.RoundToHalf(AttentionReference.Random(rng, B * S * Hq * D));
            var k = AttentionReference.RoundToHalf(AttentionReference.Random(rng, B * S * Hkv * D));
            var v = AttentionReference.RoundToHalf(AttentionReference.Random(rng, B * S * Hkv * D));
            var output = new Float16[B * S * Hq * D];
            using var qv = OrtValue.CreateTensorValueFromMemory(q.Select(x => (Float16)x).ToArray(), [B, S, Hq * D]);
            using var kv = OrtValue.CreateTensorValueFromMemory(k.Select(x => (Float16)x).ToArray(), [B, S, Hkv * D]);
            using var vv = OrtValue.CreateTensorValueFromMemory(v.Select(x => (Float16)x).ToArray(), [B, S, Hkv * D]);
            using var pl = OrtValue.CreateTensorValueFromMemory((int[])past.Clone(), [B]);
            using var ov = OrtValue.CreateTensorValueFromMemory(output, [B, S, Hq * D]);
            binding.BindInput("query", qv);
            binding.BindInput("key", kv);
            binding.BindInput("value", vv);
            binding.BindInput("past_key", kValue);
            binding.BindInput("past_value", vValue);
            binding.BindInput("past_lengths", pl);
            binding.BindOutput("output", ov);
            binding.BindOutput("present_key", kValue);
            binding.BindOutput("present_value", vValue);
            session.RunWithBinding(runOptions, binding);
            int[] n = [S, S];
            for (int b = 0; b < B; b++) reference.Append(b, k, v, S, S);
            var expected = reference.Attend(q, S, Hq, W, 0.3f, 0f, past, n);
            AttentionReference.AssertClose(expected, output.Select(h => (float)h).ToArray(), 3e-3, $"fp16 output at past {past[0]}");
            AssertCacheHolds(reference, cacheK.Select(h => (float)h).ToArray(), cacheV.Select(h => (float)h).ToArray(), C, "fp16 cache");
            for (int b = 0; b < B; b++) past[b] += S;
        }
    }

    [TestMethod]
    public void GlobalCacheWithGqaGroupsMatchesReference()
    {
        const int C = 32, hq = 6, hkv = 1; // MQA, group of 6
        using var session = NativeOpModels.Session(NativeOpModels.Owner(NativeOpModels.Float, new(hq, hkv, 0)));
        var rng = new Random(4);
        var reference = new AttentionReference(1, hkv, D);
        var pastKey = new float[hkv * C * D];
        var pastValue = new float[hkv * C * D];
        int[] past = [0];
        foreach (int S in new[] { 20, 1, 1, 3 })
        {
            var q = AttentionReference.Random(rng, S * hq * D);
            var k = AttentionReference.Random(rng, S * hkv * D);
            var v = AttentionReference.Random(rng, S * hkv * D);
            var r = Run(session, F("query", q, 1, S, hq * D), F("key", k, 1, S, hkv * D), F("value", v, 1, S, hkv * D),
                F("past_key", pastKey, 1, hkv, C, D), F("past_value", pastValue, 1, hkv, C, D), I("past_lengths", past));
            reference.Append(0, k, v, S, S);
            AttentionReference.AssertClose(reference.Attend(q, S, hq, 0, 0f, 0f, past, [S]), r["output"], 1e-4, "global output");
            pastKey = r["present_key"];
            pastValue = r["present_value"];
            past[0] += S;
        }
    }
}
