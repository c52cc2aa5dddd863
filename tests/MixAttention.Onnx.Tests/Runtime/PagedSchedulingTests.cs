using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Runtime;

/// <summary>
/// The generator on paged caches (issue 19, docs/runtime.md "Paged caches"): preemption and resume when the block pool
/// runs out (recompute, and swap to host memory), and automatic prefix matching (shared prompt prefixes stored once, sliding rings through retained
/// snapshots). Every request must give the tokens — and, fp32 CPU, the logits (≤ 1e-5) — of the same request run alone on
/// the contiguous conversion, and the stream must carry each token exactly once.
/// </summary>
[TestClass]
public sealed class PagedSchedulingTests
{
    private const int BlockSize = 4;

    public TestContext TestContext { get; set; } = null!;

    private static string Convert(string name, string layout, int? blockSize) =>
        ZooFixtures.Convert(ZooFixtures.Model(name), layout, "ops", layout == "cai" ? 4 : null, o => o with { PagedBlockSize = blockSize });

    /// <summary>What one run produced: results, the stream, every logits row by (request, token index), stats.</summary>
    private sealed record Outcome(IReadOnlyList<GenerationResult> Results, List<GeneratedToken> Stream, Dictionary<(int, int), float[]> Logits, GenerationStats Stats);

    /// <summary>Each request alone (its own run, one slot) on the contiguous conversion.</summary>
    private static Outcome[] Solo(string path, GenerationRequest[] requests, int maxLength) =>
        requests.Select(r => Generate(path, new[] { r }, new SessionConfig { MaxBatch = 1, MaxLength = maxLength, PrefillChunk = 4 }, null, null)).ToArray();

    private static Outcome Generate(string path, GenerationRequest[] requests, SessionConfig config, int? scatterSeed, Action<InPlaceCacheSession, GeneratedToken>? watch, int? retained = null,
        PreemptionMode preemption = PreemptionMode.Recompute)
    {
        using var model = MixAttentionModel.Open(path, new ModelOptions { IntraOpNumThreads = 1 });
        using var session = (InPlaceCacheSession)model.CreateSession(config);
        if (scatterSeed is { } seed) session.ScatterFreeBlocks(seed);
        var logits = new Dictionary<(int, int), float[]>();
        var stream = new List<GeneratedToken>();
        var generator = new ContinuousBatchingGenerator(session) { LogitsObserved = (r, i, row) => logits.Add((r, i), (float[])row.Clone()), Preemption = preemption };
        if (retained is { } n) generator.RetainedPrefixes = n;
        var results = generator.Run(requests, t =>
        {
            stream.Add(t);
            watch?.Invoke(session, t);
        });
        Assert.IsEmpty(session.Sequences, "the run leaves no sequence behind (retained prefixes included)");
        Assert.AreEqual(0, session.Caches.UsedBlocks, "every block returns to the pool");
        return new Outcome(results, stream, logits, generator.LastStats!);
    }

    /// <summary>
    /// The run's results equal each request alone: tokens and finish reason, every logits row (≤ 1e-5), and a stream that
    /// carries each token once, in order.
    /// </summary>
    private float CheckAgainstSolo(string what, Outcome run, Outcome[] solo)
    {
        float max = 0;
        for (int r = 0; r < solo.Length; r++)
        {
            var expected = solo[r].Results[0];
            var got = run.Results[r];
            CollectionAssert.AreEqual(expected.Tokens.ToArray(), got.Tokens.ToArray(), $"{what}: request {r} tokens");
            Assert.AreEqual(expected.Finish, got.Finish, $"{what}: request {r} finish");
            var streamed = run.Stream.Where(t => t.Request == r).ToList();
            CollectionAssert.AreEqual(Enumerable.Range(0, got.Tokens.Count).ToArray(), streamed.Select(t => t.Index).ToArray(), $"{what}: request {r} stream indices (no repeat, no gap)");
            CollectionAssert.AreEqual(got.Tokens.ToArray(), streamed.Select(t => t.Token).ToArray(), $"{what}: request {r} streamed tokens");
            Assert.AreEqual(1, streamed.Count(t => t.Finish is not null), $"{what}: request {r} finishes once");
            for (int i = 0; i < got.Tokens.Count; i++)
            {
                var a = solo[r].Logits[(0, i)];
                var b = run.Logits[(r, i)];
                Assert.AreEqual(a.Length, b.Length);
                for (int v = 0; v < a.Length; v++)
                {
                    Assert.IsFalse(float.IsNaN(b[v]), $"{what}: NaN in request {r} token {i}");
                    max = Math.Max(max, Math.Abs(a[v] - b[v]));
                }
            }
        }
        TestContext.WriteLine($"{what}: max |logit - solo contiguous| = {max:E2}; stats {run.Stats}");
        Assert.IsTrue(max <= 1e-5f, $"{what}: max |logit - solo| = {max}");
        return max;
    }

    private static long[] Tokens(int count, int seed) => Enumerable.Range(0, count).Select(i => (long)((i * 37 + seed * 11 + 5) % 90)).ToArray();

    /// <summary>
    /// (a) A pool far too small for four requests at once: decode steps run out of blocks and the most recently admitted
    /// request is preempted. Recompute: it resumes by prefilling prompt + generated tokens again. Swap: its blocks and
    /// rings go to host memory and come back into other blocks of the (scattered) pool, so nothing is prefilled twice.
    /// Either way every request gives its solo tokens and logits, and the stream neither repeats nor loses a token.
    /// </summary>
    [TestMethod]
    [DataRow("llama-gqa", "cai", PreemptionMode.Recompute)]
    [DataRow("llama-gqa", "native", PreemptionMode.Recompute)]
    [DataRow("gemma3_text-dynamo", "cai", PreemptionMode.Recompute)]
    [DataRow("llama-gqa", "cai", PreemptionMode.Swap)]
    [DataRow("llama-gqa", "native", PreemptionMode.Swap)]
    [DataRow("gemma3_text-dynamo", "cai", PreemptionMode.Swap)]
    public void PreemptedRequestsResumeWithTheirSoloTokensAndLogits(string name, string layout, PreemptionMode preemption)
    {
        var requests = Enumerable.Range(0, 4).Select(r => new GenerationRequest(Tokens(7 + 2 * r, r), new GenerationOptions { MaxNewTokens = 14 })).ToArray();
        var solo = Solo(Convert(name, layout, null), requests, 40);
        // 13 blocks of 4 = 52 positions; the four requests end at 21..27 tokens (6-7 blocks each, 27 together).
        int peakUsed = 0;
        var run = Generate(Convert(name, layout, BlockSize), requests, new SessionConfig { MaxBatch = 4, MaxLength = 40, PrefillChunk = 4, KvBlocks = 13 }, scatterSeed: 7,
            (s, _) => peakUsed = Math.Max(peakUsed, s.Caches.UsedBlocks), preemption: preemption);
        CheckAgainstSolo($"{name} {layout} {preemption}", run, solo);
        Assert.IsGreaterThan(0, run.Stats.Preemptions, "the pool cannot hold every request: some must be preempted");
        if (preemption == PreemptionMode.Swap)
        {
            Assert.AreEqual(run.Stats.Preemptions, run.Stats.SwappedOut, "every preemption swaps");
            Assert.AreEqual(0, run.Stats.RecomputedTokens, "a swapped request resumes from its copied caches, not by prefilling again");
            Assert.IsGreaterThan(0L, run.Stats.SwappedBytes);
        }
        else
        {
            Assert.IsGreaterThan(0, run.Stats.RecomputedTokens, "a resume prefills the preempted request's tokens again");
            Assert.AreEqual(0, run.Stats.SwappedOut);
        }
        Assert.IsLessThanOrEqualTo(13, peakUsed);
        Assert.AreEqual(requests.Sum(r => r.Options.MaxNewTokens), run.Stats.GeneratedTokens, "each token is generated once");
    }

    /// <summary>Only a request that cannot fit the pool alone fails, with the KvBlocks advice.</summary>
    [TestMethod]
    public void OnlyARequestThatCannotFitAloneFails()
    {
        var path = Convert("llama-gqa", "native", BlockSize);
        // 3 blocks of 4 = 12 positions: a prompt of 5 cannot generate 20 tokens even alone.
        var e = Assert.ThrowsExactly<KvBlocksExhaustedException>(() => Generate(path,
            new[] { new GenerationRequest(Tokens(5, 1), new GenerationOptions { MaxNewTokens = 20 }) },
            new SessionConfig { MaxBatch = 2, MaxLength = 40, PrefillChunk = 4, KvBlocks = 3 }, null, null));
        StringAssert.Contains(e.Message, "SessionConfig.KvBlocks");
        // The same pool serves requests that fit alone, however many there are.
        var requests = Enumerable.Range(0, 3).Select(r => new GenerationRequest(Tokens(5, r), new GenerationOptions { MaxNewTokens = 6 })).ToArray();
        var run = Generate(path, requests, new SessionConfig { MaxBatch = 2, MaxLength = 40, PrefillChunk = 4, KvBlocks = 3 }, null, null);
        Assert.AreEqual(18, run.Stats.GeneratedTokens);
    }

    /// <summary>
    /// (b) Four requests behind one long system prompt (22 tokens: 5 full blocks, then a block where they diverge). Its
    /// full blocks are stored once for the requests that reuse them (used blocks well below the sum of every sequence's
    /// blocks, shared blocks counted), the reused-token counter says so, and (c) after the divergence — each request's
    /// own block from position 20, then its own generated tokens — every request still equals its solo run. The first
    /// prompt runs 8 tokens past the system prompt and the others one token, so their last prompt query reads ring
    /// positions from before the fork point that the first request's ring no longer holds (window 4): a fork that took
    /// the running request's ring instead of the prefix's snapshot changes their first token's logits.
    /// </summary>
    [TestMethod]
    [DataRow("llama-gqa", "cai")]
    [DataRow("llama-gqa", "native")]
    [DataRow("gemma3_text-dynamo", "cai")]
    public void SharedSystemPromptIsStoredOnceAndReused(string name, string layout)
    {
        var system = Tokens(22, 9);
        var requests = Enumerable.Range(0, 4).Select(r => new GenerationRequest(system.Concat(r == 0 ? Tokens(8, 50) : new[] { 40L + r }).ToArray(), new GenerationOptions { MaxNewTokens = 8 })).ToArray();
        var solo = Solo(Convert(name, layout, null), requests, 48);
        int fullBlocks = system.Length / BlockSize;
        int maxSaved = 0, maxShared = 0;
        void Watch(InPlaceCacheSession s, GeneratedToken _)
        {
            // Blocks every live sequence would hold alone, against the blocks the pool actually uses.
            int unshared = s.Sequences.Sum(q => s.Caches.BlocksFor(s.Length(q)));
            maxSaved = Math.Max(maxSaved, unshared - s.Caches.UsedBlocks);
            maxShared = Math.Max(maxShared, s.Caches.SharedBlocks);
        }
        var run = Generate(Convert(name, layout, BlockSize), requests, new SessionConfig { MaxBatch = 6, MaxLength = 48, PrefillChunk = 4 }, scatterSeed: 3, Watch);
        CheckAgainstSolo($"{name} {layout}", run, solo);
        TestContext.WriteLine($"{name} {layout}: reused {run.Stats.ReusedTokens} prompt tokens, at most {maxSaved} blocks saved, {maxShared} shared");
        // The first request computes the system prompt; with sliding rings the second builds the retained snapshot the
        // others fork, without them it forks the first request's blocks directly. At least two of four reuse it.
        Assert.IsGreaterThanOrEqualTo(2 * fullBlocks * BlockSize, run.Stats.ReusedTokens);
        Assert.IsGreaterThanOrEqualTo(fullBlocks, maxShared, "the system prompt's full blocks are shared");
        Assert.IsGreaterThanOrEqualTo(2 * fullBlocks, maxSaved, "shared blocks are stored once, not once per request");
        Assert.AreEqual(0, run.Stats.Preemptions);
    }

    /// <summary>
    /// The ring snapshot rule: a model with sliding rings reuses a prefix only from a sequence of exactly that length — a
    /// retained prefix —, so with retention off nothing is reused (the running requests are longer than the shared
    /// prefix); a model whose every cache is paged reuses the running requests' blocks directly.
    /// </summary>
    [TestMethod]
    public void RingsReuseOnlyRetainedSnapshots()
    {
        var system = Tokens(16, 4);
        var requests = Enumerable.Range(0, 3).Select(r => new GenerationRequest(system.Concat(r == 0 ? Tokens(8, 50) : new[] { 40L + r }).ToArray(), new GenerationOptions { MaxNewTokens = 4 })).ToArray();
        var config = new SessionConfig { MaxBatch = 4, MaxLength = 40, PrefillChunk = 4 };
        var rings = Generate(Convert("llama-gqa", "cai", BlockSize), requests, config, null, null, retained: 0);
        Assert.AreEqual(0, rings.Stats.ReusedTokens, "rings: no snapshot, no reuse");
        var ringsRetained = Generate(Convert("llama-gqa", "cai", BlockSize), requests, config, null, null);
        Assert.AreEqual(16, ringsRetained.Stats.ReusedTokens, "rings: the second request retains the prefix, the third forks it");
        var paged = Generate(Convert("llama-gqa", "native", BlockSize), requests, config, null, null, retained: 0);
        Assert.AreEqual(2 * 16, paged.Stats.ReusedTokens, "all caches paged: the second and third fork the first's blocks");
        for (int r = 0; r < requests.Length; r++)
        {
            CollectionAssert.AreEqual(rings.Results[r].Tokens.ToArray(), ringsRetained.Results[r].Tokens.ToArray(), $"request {r}");
        }
    }

    /// <summary>
    /// (c) Shared prefixes, divergence and preemption together: identical prompts sampled with different seeds (they
    /// diverge in their first generated tokens, each appending to its own copy of the last block) and a shared-prefix
    /// group, on a pool small enough to preempt. Every request equals its solo run; tokens, logits and stream.
    /// </summary>
    [TestMethod]
    [DataRow("llama-gqa", "cai")]
    [DataRow("llama-gqa", "native")]
    [DataRow("llama-gqa", "cai", PreemptionMode.Swap)]
    public void DivergentContinuationsOfSharedPrefixesSurvivePreemption(string name, string layout, PreemptionMode preemption = PreemptionMode.Recompute)
    {
        var prompt = Tokens(14, 2);
        var requests = new[]
        {
            new GenerationRequest(prompt, new GenerationOptions { MaxNewTokens = 12, Temperature = 1f, Seed = 1 }),
            new GenerationRequest(prompt, new GenerationOptions { MaxNewTokens = 12, Temperature = 1f, Seed = 2 }),
            new GenerationRequest(prompt, new GenerationOptions { MaxNewTokens = 12, Temperature = 1f, Seed = 3 }),
            new GenerationRequest(prompt.Take(9).Concat(Tokens(4, 8)).ToArray(), new GenerationOptions { MaxNewTokens = 12 }),
            new GenerationRequest(prompt, new GenerationOptions { MaxNewTokens = 12 }),
        };
        var solo = Solo(Convert(name, layout, null), requests, 40);
        var run = Generate(Convert(name, layout, BlockSize), requests, new SessionConfig { MaxBatch = 5, MaxLength = 40, PrefillChunk = 4, KvBlocks = 14 }, scatterSeed: 12, null,
            preemption: preemption);
        CheckAgainstSolo($"{name} {layout} {preemption}", run, solo);
        Assert.IsGreaterThan(0, run.Stats.ReusedTokens);
        Assert.IsGreaterThan(0, run.Stats.Preemptions);
        if (preemption == PreemptionMode.Swap) Assert.AreEqual(run.Stats.Preemptions, run.Stats.SwappedOut, "shared blocks are copied out and come back as the request's own");
        Assert.IsTrue(run.Results.Take(3).Select(r => string.Join(",", r.Tokens)).Distinct().Count() > 1, "sampled continuations of one prompt diverge");
    }

    /// <summary>A run cancelled while requests are preempted and prefixes retained leaves no sequence and no block behind.</summary>
    [TestMethod]
    public void CancelledRunReleasesEverything()
    {
        var system = Tokens(12, 6);
        var requests = Enumerable.Range(0, 4).Select(r => new GenerationRequest(system.Concat(Tokens(1 + r, 60 + r)).ToArray(), new GenerationOptions { MaxNewTokens = 20 })).ToArray();
        using var model = MixAttentionModel.Open(Convert("llama-gqa", "cai", BlockSize), new ModelOptions { IntraOpNumThreads = 1 });
        using var session = (InPlaceCacheSession)model.CreateSession(new SessionConfig { MaxBatch = 6, MaxLength = 40, PrefillChunk = 4, KvBlocks = 14 });
        using var cancel = new CancellationTokenSource();
        var generator = new ContinuousBatchingGenerator(session);
        int tokens = 0, peakSequences = 0;
        Assert.ThrowsExactly<OperationCanceledException>(() => generator.Run(requests, _ =>
        {
            peakSequences = Math.Max(peakSequences, session.Sequences.Count);
            if (++tokens == 30) cancel.Cancel();
        }, cancel.Token));
        TestContext.WriteLine($"stats at cancellation: {generator.LastStats}; at most {peakSequences} live sequences");
        Assert.IsGreaterThan(requests.Length, peakSequences, "a retained prefix was parked next to the running requests");
        Assert.IsGreaterThan(0, generator.LastStats!.Preemptions, "cancelled while requests were preempted");
        Assert.IsEmpty(session.Sequences);
        Assert.AreEqual(0, session.Caches.UsedBlocks);
        Assert.AreEqual(session.Caches.TotalBlocks, session.Caches.FreeBlocks);
    }

    /// <summary>
    /// Random workloads: prompts drawn from a few shared prefixes with their own tails, pools from barely enough for the
    /// longest request to generous, few or many slots. Every request equals its solo run whatever the scheduler did.
    /// </summary>
    [TestMethod]
    [DataRow("llama-gqa", "cai", 1)]
    [DataRow("llama-gqa", "native", 2)]
    [DataRow("llama-gqa", "cai", 3)]
    [DataRow("gemma3_text-dynamo", "cai", 4)]
    [DataRow("llama-gqa", "native", 11, PreemptionMode.Swap)]
    [DataRow("llama-gqa", "cai", 8, PreemptionMode.Swap)]
    [DataRow("gemma3_text-dynamo", "cai", 6, PreemptionMode.Swap)]
    [DataRow("gemma3_text-dynamo", "cai", 9, PreemptionMode.Swap)]
    public void RandomWorkloadsEqualSoloRuns(string name, string layout, int seed, PreemptionMode preemption = PreemptionMode.Recompute)
    {
        var rng = new Random(seed);
        var prefixes = Enumerable.Range(0, 2).Select(p => Tokens(rng.Next(4, 14), 70 + p)).ToArray();
        var requests = Enumerable.Range(0, 7).Select(r =>
        {
            var prompt = prefixes[rng.Next(prefixes.Length)].Take(rng.Next(1, 15)).Concat(Tokens(rng.Next(0, 6), 80 + r)).ToArray();
            var options = rng.Next(2) == 0
                ? new GenerationOptions { MaxNewTokens = rng.Next(1, 12) }
                : new GenerationOptions { MaxNewTokens = rng.Next(1, 12), Temperature = 0.9f, Seed = r };
            return new GenerationRequest(prompt, options);
        }).ToArray();
        int longest = requests.Max(r => r.Prompt.Count + r.Options.MaxNewTokens);
        var config = new SessionConfig { MaxBatch = rng.Next(2, 7), MaxLength = 40, PrefillChunk = rng.Next(2, 6), KvBlocks = (longest + BlockSize - 1) / BlockSize + 1 + rng.Next(0, 10) };
        var solo = Solo(Convert(name, layout, null), requests, 40);
        var run = Generate(Convert(name, layout, BlockSize), requests, config, scatterSeed: seed, null, preemption: preemption);
        TestContext.WriteLine($"seed {seed} ({preemption}): MaxBatch {config.MaxBatch}, chunk {config.PrefillChunk}, {config.KvBlocks} blocks, prompts {string.Join("/", requests.Select(r => r.Prompt.Count))}");
        CheckAgainstSolo($"{name} {layout} seed {seed}", run, solo);
        if (preemption == PreemptionMode.Swap)
        {
            Assert.IsGreaterThan(0, run.Stats.Preemptions, "the swap rows are seeds whose pools preempt");
            Assert.AreEqual(run.Stats.Preemptions, run.Stats.SwappedOut);
            Assert.AreEqual(0, run.Stats.RecomputedTokens);
        }
    }
}
