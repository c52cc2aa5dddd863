using Microsoft.ML.OnnxRuntime;
using static MixAttention.Onnx.Tests.NativeOps.OpRunner;

namespace MixAttention.Onnx.Tests.NativeOps;

/// <summary>SharedKvAttention (reader) consuming an owner's present caches in one graph.</summary>
[TestClass]
public sealed class SharedKvAttentionTests
{
    private const int B = 2, Hq = 4, Hkv = 2, D = 16;

    [TestMethod]
    [DataRow(6, 3, 5, DisplayName = "sliding owner W=6, reader W=3, chunk 5")]
    [DataRow(4, 4, 3, DisplayName = "sliding owner and reader W=4, chunk 3")]
    [DataRow(0, 0, 4, DisplayName = "global owner and reader")]
    [DataRow(0, 5, 4, DisplayName = "global owner, sliding reader W=5")]
    public void ReaderMatchesReferenceOverTheOwnersUpdatedCache(int ownerWindow, int readerWindow, int chunk)
    {
        // Ring caches with readers are sized max(W, W_reader + chunk - 1); global: the whole run.
        int C = ownerWindow > 0 ? Math.Max(ownerWindow, readerWindow + chunk - 1) : 64;
        using var session = NativeOpModels.Session(NativeOpModels.OwnerThenReader(NativeOpModels.Float,
            new(Hq, Hkv, ownerWindow), new(Hq, Hkv, readerWindow, Softcap: 2f)));
        var rng = new Random(ownerWindow * 100 + readerWindow);
        var reference = new AttentionReference(B, Hkv, D);
        var pastKey = new float[B * Hkv * C * D];
        var pastValue = new float[B * Hkv * C * D];
        int[] past = [0, 0];
        foreach (int S in new[] { chunk, chunk, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, chunk, 1 })
        {
            var q = AttentionReference.Random(rng, B * S * Hq * D);
            var rq = AttentionReference.Random(rng, B * S * Hq * D);
            var k = AttentionReference.Random(rng, B * S * Hkv * D);
            var v = AttentionReference.Random(rng, B * S * Hkv * D);
            var r = Run(session, F("query", q, B, S, Hq * D), F("key", k, B, S, Hkv * D), F("value", v, B, S, Hkv * D),
                F("past_key", pastKey, B, Hkv, C, D), F("past_value", pastValue, B, Hkv, C, D), I("past_lengths", past),
                F("reader_query", rq, B, S, Hq * D));
            for (int b = 0; b < B; b++) reference.Append(b, k, v, S, S);
            int[] n = [S, S];
            AttentionReference.AssertClose(reference.Attend(q, S, Hq, ownerWindow, 0f, 0f, past, n), r["output"], 1e-4, "owner");
            AttentionReference.AssertClose(reference.Attend(rq, S, Hq, readerWindow, 0f, 2f, past, n), r["reader_output"], 1e-4,
                $"reader at past {past[0]}");
            pastKey = r["present_key"];
            pastValue = r["present_value"];
            for (int b = 0; b < B; b++) past[b] += S;
        }
    }

    [TestMethod]
    public void ReaderRejectsARingTooSmallForWindowPlusChunk()
    {
        const int W = 4, C = 5, S = 3; // needs C >= W + S - 1 = 6 once the window is full
        using var session = NativeOpModels.Session(NativeOpModels.Reader(NativeOpModels.Float, new(Hq, Hkv, W)));
        var ex = Assert.ThrowsExactly<OnnxRuntimeException>(() => Run(session,
            F("query", new float[B * S * Hq * D], B, S, Hq * D), F("key_cache", new float[B * Hkv * C * D], B, Hkv, C, D),
            F("value_cache", new float[B * Hkv * C * D], B, Hkv, C, D), I("past_lengths", [10, 10])));
        StringAssert.Contains(ex.Message, "'key_cache'");
        StringAssert.Contains(ex.Message, "C >= W + new tokens - 1");
    }
}
