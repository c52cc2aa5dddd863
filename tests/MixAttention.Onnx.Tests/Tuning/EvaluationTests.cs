using MixAttention.Onnx.Layouts;
using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Runtime.Tuning;
using MixAttention.Onnx.Tests.Quantization;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Tuning;

/// <summary>Issue 20: <c>Evaluation</c> (mixattn eval) scores conversions against their source on a text.</summary>
[TestClass]
public sealed class EvaluationTests
{
    /// <summary>Random ids of the zoo's vocabulary (96), fixed seed: the "text" of these tests.</summary>
    internal static long[] Text(int count, int seed = 7)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (long)rng.Next(0, 96)).ToArray();
    }

    /// <summary>
    /// A model trained with sliding windows (Gemma-3: two layers of window 8, one global) converted `native` gives the
    /// source's distributions at every position, past the windows too; a `cai` retrofit of it does not (the check can fail).
    /// </summary>
    [TestMethod]
    public void NativeConversionOfAWindowedModelIsExactOnText()
    {
        var source = ZooFixtures.Model("gemma3_text-dynamo");
        var native = ZooFixtures.Convert(source, "native");
        var retrofit = ZooFixtures.Convert(source, "0s8_1s4_2");
        var report = Evaluation.Run(source, new[] { native, retrofit }, Text(160), new EvaluationOptions { Context = 64, PrefillChunk = 16, DecodeTokens = 8, Buckets = 16 });
        Assert.AreEqual(64, report.Context);
        Assert.AreEqual(3, report.Sequences); // the 32-token tail is kept (at least half a context)
        Assert.AreEqual(2 * 63 + 31, report.Positions);
        var (src, exact, changed) = (report.Models[0], report.Models[1], report.Models[2]);
        Assert.AreEqual(0, src.MeanKl);
        Assert.IsNull(src.Layout);
        Assert.IsLessThanOrEqualTo(1e-6, exact.MeanKl);
        Assert.IsLessThanOrEqualTo(1e-6, exact.MaxKl);
        Assert.AreEqual(src.Perplexity, exact.Perplexity, src.Perplexity * 1e-5);
        Assert.AreEqual(1.0, exact.Top1Agreement);
        Assert.AreEqual(0, src.MaxLogitDelta);
        Assert.IsLessThanOrEqualTo(1e-4, exact.MaxLogitDelta);
        Assert.IsGreaterThan(1e-2, changed.MaxLogitDelta);
        Assert.IsGreaterThan(0.9, src.Perplexity); // a real number, not a placeholder
        Assert.IsGreaterThan(1e-4, changed.MeanKl, "a smaller window than the model was trained with must show");
        // KV bytes at the context: the source keeps 3 full caches; native keeps 2 rings of 8 (+ chunk − 1 none: no readers) and one of 64.
        long perToken = 2L * 2 * 8 * 4; // K and V × 2 kv heads × head size 8 × fp32
        Assert.AreEqual(3 * 64 * perToken, src.KvBytesPerSequence);
        Assert.AreEqual((8 + 8 + 64) * perToken, exact.KvBytesPerSequence);
        Assert.HasCount(16, exact.Buckets);
        Assert.AreEqual(0, exact.Buckets[0].Start);
        // The retrofit's loss appears past its window (4): positions 0-3 see what the source sees, later ones do not.
        Assert.AreEqual(4, exact.Buckets[0].End);
        Assert.IsLessThanOrEqualTo(1e-6, changed.Buckets[0].MaxKl);
        Assert.IsGreaterThan(1e-4, changed.Buckets[^1].MeanKl);
    }

    /// <summary>
    /// Issue 18 (quality of quantized caches): an int8 conversion scored against the float-cache conversion of the same
    /// layout (a converted model as the reference). max |Δlogit| is over raw logits and equals what the runtime gives when
    /// both are run by hand with the same chunking; the per-bucket maxima hold the overall one.
    /// </summary>
    [TestMethod]
    public void MaxLogitDeltaOfAnInt8CacheMatchesTheLogitsRunByHand()
    {
        const string name = "mistral-dynamo"; // sliding window 8: the ring is rewritten many times in 64 tokens
        var floatCache = QuantizedZooTests.Convert(name, "native", "ops", "auto");
        var int8 = QuantizedZooTests.Convert(name, "native", "ops", "int8", "tensor");
        var tokens = Text(64, seed: 11);
        var options = new EvaluationOptions { Context = 64, PrefillChunk = 16, DecodeTokens = 8, Buckets = 4, Model = new ModelOptions { IntraOpNumThreads = 1 } };
        var report = Evaluation.Run(floatCache, new[] { int8 }, tokens, options);
        var (reference, quantized) = (report.Models[0], report.Models[1]);
        Assert.AreEqual(0, reference.MaxLogitDelta);
        Assert.AreEqual("0s8_1s8", reference.Layout, "a converted reference reports its layout");
        Assert.AreEqual(reference.Layout, quantized.Layout);

        // The same run by hand: prefill 64 − 1 − 8 tokens in chunks of 16, then 8 decode steps (the last token predicts nothing).
        var fed = tokens[..^1];
        var expected = QuantizedDecode.MaxAbsDiff(QuantizedDecode.Logits(floatCache, fed, prefill: 55, prefillChunk: 16),
            QuantizedDecode.Logits(int8, fed, prefill: 55, prefillChunk: 16));
        Assert.IsGreaterThan(1e-3, expected, "int8 caches must move the logits (else this test proves nothing)");
        Assert.AreEqual(expected, quantized.MaxLogitDelta, 1e-5);
        Assert.AreEqual(quantized.MaxLogitDelta, quantized.Buckets.Max(b => b.MaxLogitDelta));
        Assert.IsTrue(quantized.MeanKl > 0 && quantized.MaxKl >= quantized.MeanKl);
    }
}
