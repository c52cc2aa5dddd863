using static MixAttention.Onnx.Tests.NativeOps.OpRunner;

namespace MixAttention.Onnx.Tests.NativeOps;

/// <summary>
/// Proves numerically how ORT 1.31 GroupQueryAttention's local_window_size maps to our window:
/// local_window_size = W attends exactly the W keys p-W+1 .. p, the same as window = W (docs/ops.md).
/// </summary>
[TestClass]
public sealed class GqaWindowConventionTests
{
    private const int Hq = 4, Hkv = 2, D = 16, S = 12, W = 4;

    private static (float[] q, float[] k, float[] v) Inputs()
    {
        var rng = new Random(11);
        return (AttentionReference.Random(rng, S * Hq * D), AttentionReference.Random(rng, S * Hkv * D), AttentionReference.Random(rng, S * Hkv * D));
    }

    private static float[] Gqa(int localWindow)
    {
        var (q, k, v) = Inputs();
        using var session = NativeOpModels.Session(NativeOpModels.Gqa(Hq, Hkv, localWindow, withPast: false));
        var r = Run(session, F("query", q, 1, S, Hq * D), F("key", k, 1, S, Hkv * D), F("value", v, 1, S, Hkv * D),
            I("seqlens_k", [S - 1]), new Input("total_sequence_length", new[] { S }, []));
        return r["output"];
    }

    private static float[] Ours(int window)
    {
        var (q, k, v) = Inputs();
        int c = window > 0 ? window : S;
        using var session = NativeOpModels.Session(NativeOpModels.Owner(NativeOpModels.Float, new(Hq, Hkv, window)));
        return Run(session, F("query", q, 1, S, Hq * D), F("key", k, 1, S, Hkv * D), F("value", v, 1, S, Hkv * D),
            F("past_key", new float[Hkv * c * D], 1, Hkv, c, D), F("past_value", new float[Hkv * c * D], 1, Hkv, c, D),
            I("past_lengths", [0]))["output"];
    }

    private static double MaxDiff(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs(x - y)).Max();

    [TestMethod]
    public void GqaLocalWindowMatchesWindowedAttention()
    {
        var gqa = Gqa(W);
        Assert.IsTrue(MaxDiff(gqa, Ours(W)) < 1e-5, $"local_window_size={W} vs window={W}: {MaxDiff(gqa, Ours(W))}");
        // Off by one in either direction is visible (prefill of 12 tokens, so most rows see a full window).
        Assert.IsTrue(MaxDiff(gqa, Ours(W + 1)) > 1e-2, "local_window_size=W must not equal window=W+1");
        Assert.IsTrue(MaxDiff(gqa, Ours(W - 1)) > 1e-2, "local_window_size=W must not equal window=W-1");
        // And -1 (no window) is our global attention.
        Assert.IsTrue(MaxDiff(Gqa(-1), Ours(0)) < 1e-5, "local_window_size=-1 vs window=0");
    }
}
