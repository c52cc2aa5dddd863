using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Plan;
using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Runtime;

/// <summary>
/// Paged global caches (issue 19, docs/runtime.md "Paged caches"): <c>convert --paged</c> writes the paged contract (plan
/// version 3, a block_table input), and a paged model run through the runtime gives the contiguous model's logits (fp32
/// CPU, ≤ 1e-5) with scattered block tables, several sequences interleaving prefill chunks and decode steps, and blocks
/// reused after removals; memory is taken by actual length, and running out of blocks is a clear error.
/// </summary>
[TestClass]
public sealed class PagedCacheTests
{
    public TestContext TestContext { get; set; } = null!;

    /// <summary>Exports with and without their own windows; cai gives global owners with readers next to sliding rings.</summary>
    public static IEnumerable<object[]> ExportsAndLayouts() =>
        new[] { "llama-gqa", "mistral-dynamo", "gemma3_text-dynamo" }.SelectMany(n => new[] { "native", "cai" }.Select(l => new object[] { n, l }));

    private static string Convert(string name, string layout, int? blockSize, string dtype = "auto") =>
        ZooFixtures.Convert(ZooFixtures.Model(name), layout, "ops", layout == "cai" ? 4 : null, o => o with
        {
            PagedBlockSize = blockSize,
            KvDType = dtype,
            KvScale = dtype == "int8" ? "absmax:8" : o.KvScale,
        });

    private static CachePlan PlanOf(string path)
    {
        using var model = MixAttentionModel.Open(path);
        return model.Plan!;
    }

    [TestMethod]
    public void ConvertWritesThePagedContract()
    {
        var path = Convert("llama-gqa", "cai", blockSize: 4);
        var plan = PlanOf(path);
        Assert.AreEqual(3, plan.FormatVersion);
        Assert.AreEqual("block_table", plan.BlockTable);
        Assert.IsTrue(plan.Caches.Any(c => !c.IsSliding), "cai has a global owner");
        foreach (var c in plan.Caches)
            Assert.AreEqual(c.IsSliding ? null : 4, c.BlockSize, $"cache of layer {c.Owner}");
        var reread = CachePlan.FromJson(plan.ToJson());
        Assert.AreEqual(plan.ToJson(), reread.ToJson());

        var contiguous = PlanOf(Convert("llama-gqa", "cai", blockSize: null));
        Assert.AreEqual(1, contiguous.FormatVersion, "float, contiguous plans keep version 1");
        Assert.IsNull(contiguous.BlockTable);
    }

    [TestMethod]
    public void PagedNeedsTheOpsBackend()
    {
        var e = Assert.ThrowsExactly<MixAttentionException>(() => ZooFixtures.Convert(ZooFixtures.Model("llama-gqa"), "native", "reference", null,
            o => o with { PagedBlockSize = 16 }));
        StringAssert.Contains(e.Message, "--paged needs the ops backend");
    }

    [TestMethod]
    public void OlderPlanVersionsCannotNamePagedCaches()
    {
        var json = CachePlan.FromJson(PlanOf(Convert("llama-gqa", "native", blockSize: 8)).ToJson()).ToJson()
            .Replace("\"version\":3", "\"version\":2");
        var e = Assert.ThrowsExactly<MixAttentionException>(() => CachePlan.FromJson(json));
        StringAssert.Contains(e.Message, "no paged caches");
    }

    /// <summary>
    /// Three sequences of different lengths: chunked prefills interleaved with batched decode steps, a removal in the middle
    /// and a new sequence reusing its blocks; free blocks scattered so every table is non-contiguous.
    /// </summary>
    [TestMethod]
    [DynamicData(nameof(ExportsAndLayouts))]
    public void PagedLogitsEqualContiguous(string name, string layout)
    {
        var contiguous = Script(Convert(name, layout, blockSize: null), scatterSeed: null, out _);
        var paged = Script(Convert(name, layout, blockSize: 3), scatterSeed: 11, out var used);
        Assert.AreEqual(contiguous.Count, paged.Count);
        float max = 0;
        for (int i = 0; i < paged.Count; i++)
            for (int v = 0; v < paged[i].Length; v++)
            {
                Assert.IsFalse(float.IsNaN(paged[i][v]), $"{name} {layout}: NaN in step {i}");
                max = Math.Max(max, Math.Abs(paged[i][v] - contiguous[i][v]));
            }
        TestContext.WriteLine($"{name} {layout}: {paged.Count} logit rows, max |paged - contiguous| = {max:E2}; blocks in use at the end {used}");
        Assert.IsTrue(max <= 1e-5f, $"{name} {layout}: max |paged - contiguous| = {max}");
    }

    /// <summary>Runs the scripted workload and returns every logit row it produced (in order).</summary>
    private static List<float[]> Script(string path, int? scatterSeed, out int usedBlocksAtEnd)
    {
        var tokens = Enumerable.Range(0, 64).Select(i => (long)((i * 37 + 5) % 90)).ToArray();
        using var model = MixAttentionModel.Open(path, new ModelOptions { IntraOpNumThreads = 1 });
        using var session = (InPlaceCacheSession)model.CreateSession(new SessionConfig { MaxBatch = 3, MaxLength = 40, PrefillChunk = 4, PoisonCaches = true });
        if (scatterSeed is { } seed) session.ScatterFreeBlocks(seed);
        var rows = new List<float[]>();
        int a = session.AddSequence(), b = session.AddSequence(), c = session.AddSequence();
        rows.Add(session.Prefill(a, tokens.AsSpan(0, 9)));
        rows.Add(session.Prefill(b, tokens.AsSpan(10, 2)));
        rows.AddRange(session.Decode(new[] { a, b }, new[] { tokens[20], tokens[21] }));
        rows.Add(session.Prefill(c, tokens.AsSpan(30, 13)));
        for (int t = 0; t < 7; t++)
            rows.AddRange(session.Decode(new[] { a, b, c }, new[] { tokens[t], tokens[t + 1], tokens[t + 2] }));
        CheckBlocks(session, a, b, c);
        session.RemoveSequence(b); // its blocks go back to the pool and are reused by d
        int d = session.AddSequence();
        rows.Add(session.Prefill(d, tokens.AsSpan(40, 6)));
        for (int t = 0; t < 5; t++)
            rows.AddRange(session.Decode(new[] { c, d, a }, new[] { tokens[t + 3], tokens[t + 4], tokens[t + 5] }));
        CheckBlocks(session, a, c, d);
        usedBlocksAtEnd = session.Caches.UsedBlocks;
        return rows;
    }

    /// <summary>Paged sessions hold blocks by actual length: ceil(length / block size) per live sequence, nothing more.</summary>
    private static void CheckBlocks(InPlaceCacheSession session, params int[] sequences)
    {
        var caches = session.Caches;
        if (caches.BlockSize is null)
        {
            Assert.AreEqual(0, caches.UsedBlocks);
            return;
        }
        int expected = sequences.Sum(s => caches.BlocksFor(session.Length(s)));
        Assert.AreEqual(expected, caches.UsedBlocks, "blocks in use = sum of ceil(length / block size)");
        Assert.AreEqual(caches.TotalBlocks - expected, caches.FreeBlocks);
    }

    [TestMethod]
    public void Int8PagedLogitsEqualContiguousInt8()
    {
        var contiguous = Script(Convert("llama-gqa", "cai", blockSize: null, dtype: "int8"), scatterSeed: null, out _);
        var paged = Script(Convert("llama-gqa", "cai", blockSize: 5, dtype: "int8"), scatterSeed: 3, out _);
        float max = 0;
        for (int i = 0; i < paged.Count; i++)
            for (int v = 0; v < paged[i].Length; v++) max = Math.Max(max, Math.Abs(paged[i][v] - contiguous[i][v]));
        TestContext.WriteLine($"int8: max |paged - contiguous| = {max:E2}");
        Assert.IsTrue(max <= 1e-5f, $"int8 max |paged - contiguous| = {max}");
    }

    [TestMethod]
    public void MemoryIsTakenByActualLengthAndRefusedWhenTheBlocksRunOut()
    {
        var path = Convert("llama-gqa", "native", blockSize: 4);
        using var model = MixAttentionModel.Open(path, new ModelOptions { IntraOpNumThreads = 1 });
        // 6 blocks of 4 positions: 24 positions for 4 slots of MaxLength 64 (contiguous caches would need 256).
        using var session = (InPlaceCacheSession)model.CreateSession(new SessionConfig { MaxBatch = 4, MaxLength = 64, PrefillChunk = 8, KvBlocks = 6 });
        var caches = session.Caches;
        Assert.AreEqual(6, caches.TotalBlocks);
        Assert.AreEqual(6 * caches.BytesPerBlock, caches.AllocatedBytes);
        int a = session.AddSequence();
        Assert.AreEqual(0, caches.UsedBlocks, "an empty sequence holds no blocks");
        session.Prefill(a, new long[] { 1, 2, 3, 4, 5 });
        Assert.AreEqual(2, caches.UsedBlocks);
        session.Decode(new[] { a }, new long[] { 6 });
        session.Decode(new[] { a }, new long[] { 7 });
        session.Decode(new[] { a }, new long[] { 8 });
        Assert.AreEqual(2, caches.UsedBlocks, "8 positions fit 2 blocks");
        session.Decode(new[] { a }, new long[] { 9 });
        Assert.AreEqual(3, caches.UsedBlocks, "decode grows one block at a time");
        int b = session.AddSequence();
        var e = Assert.ThrowsExactly<KvBlocksExhaustedException>(() => session.Prefill(b, Enumerable.Range(1, 13).Select(i => (long)i).ToArray()));
        StringAssert.Contains(e.Message, "SessionConfig.KvBlocks");
        Assert.AreEqual(b, e.Sequence);
        Assert.AreEqual(3, caches.UsedBlocks, "a refused step takes no blocks");
        Assert.AreEqual(0, session.Length(b));
        session.RemoveSequence(a);
        Assert.AreEqual(0, caches.UsedBlocks, "removal frees the blocks");
        session.Prefill(b, Enumerable.Range(1, 13).Select(i => (long)i).ToArray());
        Assert.AreEqual(4, caches.UsedBlocks);
    }

    [TestMethod]
    public void GeneratorAdmitsByFreeBlocksAndMatchesContiguous()
    {
        var requests = Enumerable.Range(0, 5).Select(r => new GenerationRequest(
            Enumerable.Range(0, 6 + 3 * r).Select(i => (long)((i * 13 + r * 7) % 90)).ToArray(),
            new GenerationOptions { MaxNewTokens = 6 })).ToArray();
        IReadOnlyList<GenerationResult> Run(string path, int? blocks)
        {
            using var model = MixAttentionModel.Open(path, new ModelOptions { IntraOpNumThreads = 1 });
            using var session = model.CreateSession(new SessionConfig { MaxBatch = 4, MaxLength = 48, PrefillChunk = 8, KvBlocks = blocks });
            return new ContinuousBatchingGenerator(session).Run(requests);
        }
        var contiguous = Run(Convert("llama-gqa", "cai", blockSize: null), null);
        // 12 blocks of 4: fewer than 4 slots of the longest request need, so admission waits for blocks, not slots.
        var paged = Run(Convert("llama-gqa", "cai", blockSize: 4), 12);
        for (int r = 0; r < requests.Length; r++)
            CollectionAssert.AreEqual(contiguous[r].Tokens.ToArray(), paged[r].Tokens.ToArray(), $"request {r}");

        var e = Assert.ThrowsExactly<MixAttentionException>(() => Run(Convert("llama-gqa", "cai", blockSize: 4), 2));
        StringAssert.Contains(e.Message, "SessionConfig.KvBlocks");
    }

    /// <summary>
    /// Prefix sharing: a prompt prefilled once and forked twice. The forks share the prefix's full blocks (stored once),
    /// copy the partly filled one, and each continuation gives the logits of a sequence that prefilled prefix +
    /// continuation itself (≤ 1e-5), also after the source is removed; sliding rings are carried over by the fork.
    /// </summary>
    [TestMethod]
    [DataRow("llama-gqa", "cai", 10)]
    [DataRow("llama-gqa", "native", 8)]
    [DataRow("mistral-dynamo", "native", 10)]
    [DataRow("gemma3_text-dynamo", "cai", 9)]
    public void ForkedPrefixContinuesLikeAFullPrefill(string name, string layout, int prefixLength)
    {
        var tokens = Enumerable.Range(0, 64).Select(i => (long)((i * 29 + 3) % 90)).ToArray();
        using var model = MixAttentionModel.Open(Convert(name, layout, blockSize: 4), new ModelOptions { IntraOpNumThreads = 1 });
        using var session = (InPlaceCacheSession)model.CreateSession(new SessionConfig { MaxBatch = 4, MaxLength = 40, PrefillChunk = 4, PoisonCaches = true });
        session.ScatterFreeBlocks(5);
        var caches = session.Caches;
        var prefix = tokens.AsSpan(0, prefixLength).ToArray();
        int a = session.AddSequence();
        session.Prefill(a, prefix);
        int b = session.ForkSequence(a), c = session.ForkSequence(a);
        Assert.AreEqual(prefixLength, session.Length(b));
        if (caches.BlockSize is not null)
        {
            int full = prefixLength / 4, partial = prefixLength % 4 == 0 ? 0 : 1;
            Assert.AreEqual(full, caches.SharedBlocks, "the prefix's full blocks are stored once");
            Assert.AreEqual(full + 3 * partial, caches.UsedBlocks, "full blocks once, the partial block copied per fork");
        }
        // d: the same text prefilled from scratch.
        var continuation = tokens.AsSpan(20, 6).ToArray();
        int d = session.AddSequence();
        var expected = session.Prefill(d, prefix.Concat(continuation).ToArray());
        var got = session.Prefill(b, continuation);
        AssertClose(expected, got, $"{name} {layout}: fork b after its prefill");
        session.Prefill(c, tokens.AsSpan(30, 3)); // c and a diverge from b; they must not disturb it
        session.Decode(new[] { a }, new[] { tokens[40] });
        session.RemoveSequence(a); // the source goes first: b's shared blocks stay
        for (int t = 0; t < 6; t++)
        {
            var rows = session.Decode(new[] { b, c, d }, new[] { tokens[50 + t], tokens[45 + t], tokens[50 + t] });
            AssertClose(rows[2], rows[0], $"{name} {layout}: fork b decode step {t}");
        }
        session.RemoveSequence(b);
        session.RemoveSequence(c);
        session.RemoveSequence(d);
        Assert.AreEqual(0, caches.UsedBlocks, "every block returns once its last holder is removed");
        Assert.AreEqual(caches.TotalBlocks, caches.FreeBlocks);
    }

    private static void AssertClose(float[] expected, float[] actual, string what)
    {
        Assert.AreEqual(expected.Length, actual.Length, what);
        float max = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.IsFalse(float.IsNaN(actual[i]), $"{what}: NaN");
            max = Math.Max(max, Math.Abs(expected[i] - actual[i]));
        }
        Assert.IsTrue(max <= 1e-5f, $"{what}: max |diff| = {max}");
    }
}
