using Microsoft.ML.OnnxRuntime;
using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Runtime;

[TestClass]
public sealed class InPlaceCacheSessionTests
{
    /// <summary>The in-place driver reproduces torch's logits on an SWA fixture (native layout), ring wrapping 3×.</summary>
    [TestMethod]
    [DataRow("mistral-torchscript")]
    [DataRow("gemma3-dynamo")]
    public void ConvertedSessionMatchesTorch(string fixture)
    {
        var reference = TorchReference.For(fixture);
        using var model = RuntimeFixtures.Open(RuntimeFixtures.Convert(fixture));
        Assert.IsTrue(model.IsInPlace);
        using var session = model.CreateSession(new SessionConfig { MaxBatch = reference.Batch, MaxLength = 64, PrefillChunk = 5, PoisonCaches = true });
        int v = 256;
        for (int b = 0; b < reference.Batch; b++)
        {
            var ids = reference.InputIds.AsSpan(b * reference.Length, reference.Length);
            var seq = session.AddSequence();
            var logits = new List<float>(session.Prefill(seq, ids[..5], allPositions: true));
            for (int t = 5; t < reference.Length; t++)
                logits.AddRange(session.Decode(new[] { seq }, new[] { ids[t] })[0]);
            var expected = reference.Logits.AsSpan(b * reference.Length * v, reference.Length * v).ToArray();
            Assert.IsLessThanOrEqualTo(1e-4f, Compare.MaxAbsDiff(logits.ToArray(), expected), $"{fixture} row {b}");
        }
    }

    /// <summary>
    /// A decode step of a model with an attention_mask input (an unconverted GenAI model, run by the plain driver) does
    /// not allocate its <c>[1, total]</c> mask: the all-ones buffer is reused, so the managed bytes a step allocates stay
    /// below the mask's size as the sequence grows (a fresh mask per step is <c>total</c> int64s: 4 MB at 16 × 32K, left
    /// for the garbage collector to take inside later work).
    /// </summary>
    [TestMethod]
    public void DecodeStepsReuseTheAttentionMask()
    {
        using var model = RuntimeFixtures.Open(TestPaths.Fixture("llama-gqa"));
        const int context = 480, steps = 8;
        using var session = model.CreateSession(new SessionConfig { MaxBatch = 1, MaxLength = 512, PrefillChunk = 512 });
        Assert.IsInstanceOfType<GrowingCacheSession>(session);
        var seq = session.AddSequence();
        session.Prefill(seq, RuntimeFixtures.RandomTokens(1, context));
        var logits = new float[session.VocabSize];
        session.Decode(new[] { seq }, new long[] { 1 }, logits); // warm-up: the mask buffer grows here
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < steps; i++) session.Decode(new[] { seq }, new long[] { 1 }, logits);
        long perStep = (GC.GetAllocatedBytesForCurrentThread() - before) / steps;
        Console.WriteLine($"allocated per decode step: {perStep} bytes (mask {context * 8} bytes)");
        Assert.IsLessThan(context * 8, perStep, $"a decode step allocated {perStep} bytes; the mask alone is {context * 8}");
    }

    /// <summary>
    /// The allocation-free Decode overload writes the same logits as the array one, row i of the span for the i-th
    /// listed sequence (listed out of slot order, a sequence of the batch left out), for the converted and the plain
    /// driver; a span of the wrong length is an ArgumentException before anything runs (lengths unchanged).
    /// </summary>
    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void SpanDecodeMatchesArrayDecode(bool converted)
    {
        string path = converted ? RuntimeFixtures.Convert("mistral-torchscript") : TestPaths.Fixture("mistral-torchscript");
        using var model = RuntimeFixtures.Open(path);
        var config = new SessionConfig { MaxBatch = 3, MaxLength = 48, PrefillChunk = 4 };
        using var byArrays = model.CreateSession(config);
        using var bySpan = model.CreateSession(config);
        Assert.AreEqual(converted, byArrays is InPlaceCacheSession);
        var prompts = new[] { RuntimeFixtures.RandomTokens(1, 5), RuntimeFixtures.RandomTokens(2, 9), RuntimeFixtures.RandomTokens(3, 3) };
        var a = prompts.Select(p => { var id = byArrays.AddSequence(); byArrays.Prefill(id, p); return id; }).ToArray();
        var b = prompts.Select(p => { var id = bySpan.AddSequence(); bySpan.Prefill(id, p); return id; }).ToArray();
        int v = bySpan.VocabSize;
        var buffer = new float[2 * v];
        for (int step = 0; step < 12; step++)
        {
            var order = step % 2 == 0 ? new[] { 2, 0 } : new[] { 1, 2 }; // out of slot order; one sequence rests
            var tokens = order.Select(i => (long)(7 * step + i + 1)).ToArray();
            var expected = byArrays.Decode(order.Select(i => a[i]).ToArray(), tokens);
            bySpan.Decode(order.Select(i => b[i]).ToArray(), tokens, buffer);
            for (int i = 0; i < order.Length; i++)
                CollectionAssert.AreEqual(expected[i], buffer.AsSpan(i * v, v).ToArray(), $"step {step}, sequence {order[i]}");
        }
        int before = bySpan.Length(b[0]);
        var e = Assert.ThrowsExactly<ArgumentException>(() => bySpan.Decode(new[] { b[0] }, new[] { 1L }, new float[v - 1]));
        StringAssert.Contains(e.Message, $"1 × {v}");
        Assert.AreEqual(before, bySpan.Length(b[0]));
    }

    /// <summary>
    /// DecodeOnDevice leaves the logits in the model's memory (host memory on the CPU provider) and says which row
    /// belongs to which listed sequence: the rows equal Decode's logits of an identical session, over steps with
    /// sequences listed out of slot order and one left out (slot 0 too, so rows and slots differ); the tensor stays valid until the next call.
    /// </summary>
    [TestMethod]
    public void DecodeOnDeviceGivesTheSameLogitsInPlace()
    {
        using var model = RuntimeFixtures.Open(RuntimeFixtures.Convert("gemma3-torchscript", "cai", 8));
        var config = new SessionConfig { MaxBatch = 3, MaxLength = 48, PrefillChunk = 4 };
        using var host = (InPlaceCacheSession)model.CreateSession(config);
        using var device = (InPlaceCacheSession)model.CreateSession(config);
        var prompts = new[] { RuntimeFixtures.RandomTokens(4, 6), RuntimeFixtures.RandomTokens(5, 2), RuntimeFixtures.RandomTokens(6, 11) };
        var a = prompts.Select(p => { var id = host.AddSequence(); host.Prefill(id, p); return id; }).ToArray();
        var b = prompts.Select(p => { var id = device.AddSequence(); device.Prefill(id, p); return id; }).ToArray();
        int v = device.VocabSize;
        for (int step = 0; step < 10; step++)
        {
            var order = step % 3 == 0 ? new[] { 2, 1 } : new[] { 1, 2, 0 }; // without slot 0 the rows start at slot 1
            var tokens = order.Select(i => (long)(5 * step + i + 2)).ToArray();
            var expected = host.Decode(order.Select(i => a[i]).ToArray(), tokens);
            var got = device.DecodeOnDevice(order.Select(i => b[i]).ToArray(), tokens);
            Assert.AreEqual(OrtMemoryInfo.DefaultInstance.Name, got.Location.Name);
            Assert.HasCount(order.Length, got.Rows);
            var all = got.Tensor.GetTensorDataAsSpan<float>();
            for (int i = 0; i < order.Length; i++)
                CollectionAssert.AreEqual(expected[i], all.Slice(got.Rows[i] * v, v).ToArray(), $"step {step}, sequence {order[i]}");
        }
    }

    /// <summary>
    /// Continuous batching: four sequences of different prompt lengths join and leave mid-run (slots reused); each gets
    /// exactly the logits it gets when run alone.
    /// </summary>
    [TestMethod]
    [DataRow("mistral-torchscript", "native", null)]
    [DataRow("gemma3-torchscript", "cai", 8)]
    public void ContinuousBatchingGivesEachSequenceItsSoloLogits(string fixture, string layout, int? window)
    {
        using var model = RuntimeFixtures.Open(RuntimeFixtures.Convert(fixture, layout, window));
        var config = new SessionConfig { MaxBatch = 3, MaxLength = 96, PrefillChunk = 7, PoisonCaches = true };
        // (prompt length, decode steps, step at which it joins)
        var plan = new (int Prompt, int Steps, int Join)[] { (3, 40, 0), (19, 12, 0), (9, 30, 5), (30, 20, 14) };
        var prompts = plan.Select((p, i) => RuntimeFixtures.RandomTokens(100 + i, p.Prompt + p.Steps)).ToArray();

        float[][] Solo(int i)
        {
            using var s = model.CreateSession(config with { MaxBatch = 1 });
            var seq = s.AddSequence();
            var rows = new List<float[]> { s.Prefill(seq, prompts[i].AsSpan(0, plan[i].Prompt)) };
            for (int t = 0; t < plan[i].Steps - 1; t++)
                rows.Add(s.Decode(new[] { seq }, new[] { prompts[i][plan[i].Prompt + t] })[0]);
            return rows.ToArray();
        }
        var expected = Enumerable.Range(0, plan.Length).Select(Solo).ToArray();

        using var session = (InPlaceCacheSession)model.CreateSession(config);
        var got = plan.Select(_ => new List<float[]>()).ToArray();
        var ids = new int?[plan.Length];
        var slotsUsed = new HashSet<int>();
        for (int step = 0; got.Select((g, i) => g.Count < plan[i].Steps).Any(x => x); step++)
        {
            // Join: prefill alone in the sequence's slot.
            for (int i = 0; i < plan.Length; i++)
                if (ids[i] is null && got[i].Count == 0 && plan[i].Join <= step && session.FreeSlots > 0)
                {
                    ids[i] = session.AddSequence();
                    slotsUsed.Add(session.SlotOf(ids[i]!.Value));
                    got[i].Add(session.Prefill(ids[i]!.Value, prompts[i].AsSpan(0, plan[i].Prompt)));
                }
            // One batched decode step for every live sequence that still has tokens to feed.
            var live = Enumerable.Range(0, plan.Length).Where(i => ids[i] is not null && got[i].Count < plan[i].Steps).ToArray();
            if (live.Length > 0)
            {
                var rows = session.Decode(live.Select(i => ids[i]!.Value).ToArray(), live.Select(i => prompts[i][plan[i].Prompt + got[i].Count - 1]).ToArray());
                for (int k = 0; k < live.Length; k++) got[live[k]].Add(rows[k]);
            }
            // Leave when done.
            for (int i = 0; i < plan.Length; i++)
                if (ids[i] is { } id && got[i].Count == plan[i].Steps)
                {
                    session.RemoveSequence(id);
                    ids[i] = null;
                }
        }
        Assert.IsLessThanOrEqualTo(3, slotsUsed.Count, "slots are reused");
        for (int i = 0; i < plan.Length; i++)
        {
            Assert.HasCount(plan[i].Steps, got[i]);
            for (int t = 0; t < plan[i].Steps; t++)
                Assert.IsLessThanOrEqualTo(1e-5f, Compare.MaxAbsDiff(expected[i][t], got[i][t]), $"sequence {i} step {t}");
        }
    }

    /// <summary>A prompt longer than the chunk (several prefill calls) gives the one-shot prefill's logits, then the same decode.</summary>
    [TestMethod]
    [DataRow("mistral-torchscript", "native", null)]
    [DataRow("gemma3-torchscript", "cai", 8)]
    [DataRow("llama-torchscript", "0s_0s", 4)]
    public void ChunkedPrefillEqualsOneShotPrefill(string fixture, string layout, int? window)
    {
        using var model = RuntimeFixtures.Open(RuntimeFixtures.Convert(fixture, layout, window));
        var tokens = RuntimeFixtures.RandomTokens(5, 50);
        float[] Run(int chunk)
        {
            using var s = model.CreateSession(new SessionConfig { MaxLength = 64, PrefillChunk = chunk, PoisonCaches = true });
            var seq = s.AddSequence();
            var all = new List<float>(s.Prefill(seq, tokens.AsSpan(0, 40), allPositions: true));
            for (int t = 40; t < 50; t++) all.AddRange(s.Decode(new[] { seq }, new[] { tokens[t] })[0]);
            return all.ToArray();
        }
        var oneShot = Run(40);
        foreach (var chunk in new[] { 3, 16 })
            Assert.IsLessThanOrEqualTo(1e-5f, Compare.MaxAbsDiff(oneShot, Run(chunk)), $"chunk {chunk}");
    }

    [TestMethod]
    public void GlobalCacheOverflowIsAClearErrorAndWritesNothing()
    {
        using var model = RuntimeFixtures.Open(RuntimeFixtures.Convert("gemma3-torchscript"));
        using var session = model.CreateSession(new SessionConfig { MaxLength = 20, PrefillChunk = 8 });
        var seq = session.AddSequence();
        var e = Assert.ThrowsExactly<CacheOverflowException>(() => session.Prefill(seq, RuntimeFixtures.RandomTokens(1, 21)));
        StringAssert.Contains(e.Message, "max length 20");
        Assert.AreEqual(0, session.Length(seq));
        session.Prefill(seq, RuntimeFixtures.RandomTokens(1, 19));
        session.Decode(new[] { seq }, new[] { 3L });
        Assert.ThrowsExactly<CacheOverflowException>(() => session.Decode(new[] { seq }, new[] { 3L }));
        Assert.AreEqual(20, session.Length(seq));
    }

    [TestMethod]
    public void ResetFreesEverySlotAndSlotsAreReused()
    {
        using var model = RuntimeFixtures.Open(RuntimeFixtures.Convert("mistral-torchscript"));
        using var session = (InPlaceCacheSession)model.CreateSession(new SessionConfig { MaxBatch = 2, MaxLength = 32, PrefillChunk = 4 });
        var a = session.AddSequence();
        var b = session.AddSequence();
        Assert.ThrowsExactly<MixAttentionException>(() => session.AddSequence());
        session.RemoveSequence(a);
        var c = session.AddSequence();
        Assert.AreEqual(0, session.SlotOf(c));
        session.Reset();
        Assert.AreEqual(2, session.FreeSlots);
        Assert.ThrowsExactly<MixAttentionException>(() => session.Length(b));
    }

    /// <summary>Memory accounting: only owners are allocated; rings of the window, global caches of max length.</summary>
    [TestMethod]
    public void MemoryCountsOwnersOnly()
    {
        using var model = RuntimeFixtures.Open(RuntimeFixtures.Convert("gemma3-torchscript", "cai", 8));
        using var session = (InPlaceCacheSession)model.CreateSession(new SessionConfig { MaxBatch = 4, MaxLength = 1024, PrefillChunk = 16 });
        var plan = model.Plan!;
        long expected = 0;
        foreach (var c in plan.Caches)
        {
            int cap = c.IsSliding ? c.Window + (c.Readers.Count > 0 ? 15 : 0) : 1024;
            expected += 2L * 4 * c.KvNumHeads * cap * c.HeadSize * 4;
        }
        var m = session.Memory();
        Assert.AreEqual(expected, m.AllocatedBytes);
        Assert.AreEqual(expected / 4, m.BytesPerSequence);
        Assert.AreEqual(6L * 2 * 2 * 1024 * 16 * 4, m.UnconvertedBytesPerSequence);
        Assert.IsGreaterThan(1.0, m.Saving);
    }
}
