using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using MixAttention.Onnx.Lowering;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Tests.Support;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Tests.Runtime;

/// <summary>
/// Every misuse of the runtime's public API fails with a clear exception that names what was wrong and what was
/// expected — before anything runs, so nothing is written — never with an ORT error deep inside, silent garbage or
/// memory corruption. docs/runtime.md ("Thread safety and errors") lists them.
/// </summary>
[TestClass]
public sealed class MisuseTests
{
    private const int Vocab = 256;

    /// <summary>All layers sliding (rings only).</summary>
    private static string Rings => RuntimeFixtures.Convert("mistral-torchscript");

    /// <summary>Sliding and global layers: a global cache of MaxLength.</summary>
    private static string WithGlobal => RuntimeFixtures.Convert("gemma3-torchscript");

    /// <summary>An unconverted export (GrowingCacheSession).</summary>
    private static string Unconverted => TestPaths.Fixture("mistral-torchscript");

    private static readonly SessionConfig Small = new() { MaxBatch = 2, MaxLength = 32, PrefillChunk = 4 };

    // ---- configuration -------------------------------------------------------------------------------------------

    [TestMethod]
    [DataRow(0, 32, 4, "SessionConfig.MaxBatch must be >= 1")]
    [DataRow(-3, 32, 4, "SessionConfig.MaxBatch must be >= 1 (batch slots), got -3")]
    [DataRow(1, 0, 4, "SessionConfig.MaxLength must be >= 1")]
    [DataRow(1, 32, 0, "SessionConfig.PrefillChunk must be >= 1")]
    [DataRow(1, 32, -1, "SessionConfig.PrefillChunk must be >= 1")]
    public void NonPositiveSizesAreRejected(int batch, int length, int chunk, string message)
    {
        using var model = RuntimeFixtures.Open(Rings);
        using var plain = RuntimeFixtures.Open(Unconverted);
        var config = new SessionConfig { MaxBatch = batch, MaxLength = length, PrefillChunk = chunk };
        foreach (var m in new[] { model, plain })
        {
            var e = Assert.ThrowsExactly<MixAttentionException>(() => m.CreateSession(config));
            StringAssert.Contains(e.Message, message);
            Assert.AreEqual(1, m.References, "a failed CreateSession holds no reference to the model");
        }
    }

    /// <summary>An absurd size fails before allocating and says how many bytes it would need; int.MaxValue everywhere does not overflow.</summary>
    [TestMethod]
    public void AbsurdCacheSizesFailWithTheBytesTheyWouldNeed()
    {
        using var model = RuntimeFixtures.Open(WithGlobal);
        var plan = model.Plan!;
        var config = new SessionConfig { MaxBatch = 100_000, MaxLength = 1_000_000, PrefillChunk = 16 };
        long expected = plan.Caches.Sum(c => 2L * 100_000 * c.KvNumHeads * (c.IsSliding ? c.Window + (c.Readers.Count > 0 ? 15 : 0) : 1_000_000) * c.HeadSize * 4);
        var e = Assert.ThrowsExactly<MixAttentionException>(() => model.CreateSession(config));
        StringAssert.Contains(e.Message, $"would need {expected:N0} bytes");
        StringAssert.Contains(e.Message, "Lower MaxBatch or MaxLength");

        var huge = new SessionConfig { MaxBatch = int.MaxValue, MaxLength = int.MaxValue, PrefillChunk = int.MaxValue };
        e = Assert.ThrowsExactly<MixAttentionException>(() => model.CreateSession(huge));
        StringAssert.Contains(e.Message, "would need 1,180,591,");
        // A ring that other layers read holds window + chunk − 1 positions: more than an int.
        using var cai = RuntimeFixtures.Open(RuntimeFixtures.Convert("gemma3-torchscript", "cai", 8));
        e = Assert.ThrowsExactly<MixAttentionException>(() => cai.CreateSession(huge));
        StringAssert.Contains(e.Message, "would hold 2147483654 positions (window 8, PrefillChunk 2147483647");

        e = Assert.ThrowsExactly<MixAttentionException>(() => model.CreateSession(Small with { MaxCacheBytes = 1000 }));
        StringAssert.Contains(e.Message, "more than the limit of 1,000 bytes");
        StringAssert.Contains(e.Message, "SessionConfig.MaxCacheBytes");
        Assert.AreEqual(1, model.References);
        using var fits = model.CreateSession(Small);
    }

    // ---- sequences and tokens ------------------------------------------------------------------------------------

    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void TooManySequencesIsAClearError(bool converted)
    {
        using var model = RuntimeFixtures.Open(converted ? Rings : Unconverted);
        using var session = model.CreateSession(Small);
        session.AddSequence();
        session.AddSequence();
        var e = Assert.ThrowsExactly<MixAttentionException>(() => session.AddSequence());
        StringAssert.Contains(e.Message, "all 2 batch slots are in use (SessionConfig.MaxBatch = 2)");
        Assert.HasCount(2, session.Sequences);
    }

    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void UnknownRemovedAndNeverPrefilledSequencesAreClearErrors(bool converted)
    {
        using var model = RuntimeFixtures.Open(converted ? Rings : Unconverted);
        using var session = model.CreateSession(Small);
        var a = session.AddSequence();
        var b = session.AddSequence();
        session.Prefill(a, new long[] { 1, 2, 3 });
        session.RemoveSequence(b);
        foreach (var act in new Action[]
        {
            () => session.Prefill(b, new long[] { 1 }),
            () => session.Decode(new[] { a, b }, new long[] { 1, 2 }),
            () => session.Length(99),
            () => session.RemoveSequence(b),
        })
        {
            var e = Assert.ThrowsExactly<MixAttentionException>(act);
            StringAssert.Contains(e.Message, "does not exist in this session (removed, or never added by AddSequence); live sequences: " + a);
        }
        Assert.AreEqual(3, session.Length(a), "a rejected Decode runs nothing, not even for the valid sequences");

        var fresh = session.AddSequence();
        var n = Assert.ThrowsExactly<MixAttentionException>(() => session.Decode(new[] { a, fresh }, new long[] { 1, 2 }));
        StringAssert.Contains(n.Message, $"sequence {fresh} has no tokens yet: Prefill it");
        Assert.AreEqual(3, session.Length(a));
    }

    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void EmptyMismatchedAndDuplicateTokenListsAreClearErrors(bool converted)
    {
        using var model = RuntimeFixtures.Open(converted ? Rings : Unconverted);
        using var session = model.CreateSession(Small);
        var a = session.AddSequence();
        StringAssert.Contains(Assert.ThrowsExactly<MixAttentionException>(() => session.Prefill(a, ReadOnlySpan<long>.Empty)).Message, "got no tokens");
        session.Prefill(a, new long[] { 5 });
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => session.Decode(Array.Empty<int>(), Array.Empty<long>())).Message, "Decode got no sequences");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => session.Decode(new[] { a }, new long[] { 1, 2 })).Message, "Decode got 1 sequences and 2 tokens");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => session.Decode(new[] { a, a }, new long[] { 1, 2 })).Message, $"sequence {a} is listed twice");
        Assert.ThrowsExactly<ArgumentNullException>(() => session.Decode(null!, new long[] { 1 }));
        Assert.AreEqual(1, session.Length(a));
    }

    /// <summary>
    /// Ids outside [0, vocab) are refused before ORT runs: its Gather would take -1 as "the last row" (silent garbage) and
    /// fail deep inside for ids ≥ vocab.
    /// </summary>
    [TestMethod]
    [DataRow(true, -1L)]
    [DataRow(true, 256L)]
    [DataRow(true, long.MaxValue)]
    [DataRow(false, -1L)]
    [DataRow(false, 256L)]
    public void TokenIdsOutsideTheVocabularyAreRefused(bool converted, long bad)
    {
        using var model = RuntimeFixtures.Open(converted ? Rings : Unconverted);
        Assert.AreEqual(Vocab, model.VocabSize);
        using var session = model.CreateSession(Small);
        var a = session.AddSequence();
        var e = Assert.ThrowsExactly<MixAttentionException>(() => session.Prefill(a, new long[] { 1, bad, 2 }));
        StringAssert.Contains(e.Message, $"Prefill of sequence {a}, token 1: token id {bad} is outside the model's vocabulary; ids must be in [0, {Vocab}).");
        Assert.AreEqual(0, session.Length(a));
        session.Prefill(a, new long[] { 1, 2 });
        e = Assert.ThrowsExactly<MixAttentionException>(() => session.Decode(new[] { a }, new[] { bad }));
        StringAssert.Contains(e.Message, $"Decode of sequence {a}: token id {bad} is outside the model's vocabulary");
        Assert.AreEqual(2, session.Length(a));
        session.Decode(new[] { a }, new long[] { Vocab - 1 });
    }

    /// <summary>
    /// A global cache never wraps: a prompt longer than MaxLength, or a decode past it, throws before running, and the
    /// cache memory (poisoned with NaN) is untouched. The other sequences of a refused batched step do not advance.
    /// </summary>
    [TestMethod]
    public void GlobalCacheOverflowCoversPrefillAndDecodeAndWritesNothing()
    {
        using var model = RuntimeFixtures.Open(WithGlobal);
        using var session = (InPlaceCacheSession)model.CreateSession(new SessionConfig { MaxBatch = 2, MaxLength = 12, PrefillChunk = 4, PoisonCaches = true });
        Assert.AreEqual(12, session.Caches.GlobalCapacity);
        var a = session.AddSequence();
        var b = session.AddSequence();
        var e = Assert.ThrowsExactly<CacheOverflowException>(() => session.Prefill(a, RuntimeFixtures.RandomTokens(1, 13)));
        StringAssert.Contains(e.Message, $"sequence {a}: 0 tokens + 13 new would exceed the global KV cache's max length 12");
        Assert.AreEqual((a, 0, 13, 12), (e.Sequence, e.Length, e.NewTokens, e.Capacity));
        Assert.AreEqual(0, session.Length(a));
        foreach (var c in session.Caches.Caches)
        {
            var floats = new float[c.SlotBytes / 4];
            Marshal.Copy(c.KeyAddress, floats, 0, floats.Length);
            Assert.IsTrue(floats.All(float.IsNaN), $"the refused prefill wrote into the cache of layer {c.Entry.Owner}");
        }

        session.Prefill(a, RuntimeFixtures.RandomTokens(2, 12));
        session.Prefill(b, RuntimeFixtures.RandomTokens(3, 5));
        e = Assert.ThrowsExactly<CacheOverflowException>(() => session.Decode(new[] { b, a }, new long[] { 1, 2 }));
        Assert.AreEqual(a, e.Sequence);
        Assert.AreEqual(12, session.Length(a));
        Assert.AreEqual(5, session.Length(b), "a refused batched step runs for none of its sequences");
        Assert.ThrowsExactly<CacheOverflowException>(() => session.Prefill(b, RuntimeFixtures.RandomTokens(4, 8)));
        session.Prefill(b, RuntimeFixtures.RandomTokens(4, 7));
        Assert.AreEqual(12, session.Length(b));
    }

    [TestMethod]
    public void UnconvertedSessionsHoldAtMostMaxLengthTokens()
    {
        using var model = RuntimeFixtures.Open(Unconverted);
        using var session = model.CreateSession(new SessionConfig { MaxLength = 6, PrefillChunk = 4 });
        var a = session.AddSequence();
        Assert.ThrowsExactly<CacheOverflowException>(() => session.Prefill(a, RuntimeFixtures.RandomTokens(1, 7)));
        session.Prefill(a, RuntimeFixtures.RandomTokens(1, 5));
        session.Decode(new[] { a }, new long[] { 1 });
        var e = Assert.ThrowsExactly<CacheOverflowException>(() => session.Decode(new[] { a }, new long[] { 1 }));
        StringAssert.Contains(e.Message, "max length 6");
        Assert.AreEqual(6, session.Length(a));
    }

    // ---- models and plans ----------------------------------------------------------------------------------------

    [TestMethod]
    public void InPlaceCacheSessionNeedsAPlanWithPreallocatedCaches()
    {
        using var plain = RuntimeFixtures.Open(Unconverted);
        var e = Assert.ThrowsExactly<MixAttentionException>(() => new InPlaceCacheSession(plain, Small));
        StringAssert.Contains(e.Message, "has no cache plan ('mixattention.cache_plan' in its metadata), so it is not a converted MixAttention model");
        Assert.AreEqual(1, plain.References);
        using var reference = RuntimeFixtures.Open(RuntimeFixtures.Convert("mistral-torchscript", backend: "reference"));
        e = Assert.ThrowsExactly<MixAttentionException>(() => new InPlaceCacheSession(reference, Small));
        StringAssert.Contains(e.Message, "grow each step and cannot be preallocated");
        Assert.ThrowsExactly<ArgumentNullException>(() => new InPlaceCacheSession(null!));
    }

    /// <summary>Writes a copy of a converted model whose cache plan is edited by <paramref name="edit"/>.</summary>
    private static string WithPlan(string converted, Func<CachePlan, CachePlan> edit)
    {
        var model = OnnxModel.Load(converted);
        edit(CachePlan.FromModel(model.Proto)!).WriteTo(model.Proto);
        var path = Path.Combine(TestPaths.TempDir(), "edited.onnx");
        model.Save(path);
        return path;
    }

    private static CachePlan EditFirstCache(CachePlan plan, Func<CacheEntry, CacheEntry> edit) =>
        plan with { Caches = plan.Caches.Select((c, i) => i == 0 ? edit(c) : c).ToArray() };

    [TestMethod]
    public void APlanThatDisagreesWithTheGraphFailsAtOpen()
    {
        var cases = new (Func<CachePlan, CachePlan> Edit, string Message)[]
        {
            (p => EditFirstCache(p, c => c with { PastKey = "no_such_past" }), "the cache plan names input 'no_such_past' (past key of the cache of layer 0), but the model has no such input; its inputs are "),
            (p => EditFirstCache(p, c => c with { PresentValue = "no_such_present" }), "the cache plan names output 'no_such_present' (present value of the cache of layer 0), but the model has no such output"),
            (p => p with { PastLengths = "no_such_lengths" }, "input 'no_such_lengths' (past lengths)"),
            (p => p with { PositionIds = "no_such_positions" }, "input 'no_such_positions' (position ids)"),
            (p => EditFirstCache(p, c => c with { DType = "int4" }), "edited.onnx: the cache of layer 0 has dtype 'int4', which this runtime does not support (it allocates fp32, fp16, bf16, int8 and fp8e4m3 caches)"),
            (p => EditFirstCache(p, c => c with { DType = "fp16" }), "the cache plan says the cache of layer 0 is fp16 (Float16), but input '"),
            (p => EditFirstCache(p, c => c with { KvNumHeads = c.KvNumHeads + 1 }), "but the cache plan says"),
        };
        foreach (var (edit, message) in cases)
        {
            var path = WithPlan(Rings, edit);
            var e = Assert.ThrowsExactly<MixAttentionException>(() => RuntimeFixtures.Open(path), message);
            StringAssert.Contains(e.Message, message);
        }
    }

    /// <summary>CUDA asked for where its provider cannot load: one clear error at Open, not a DllNotFound deep inside.</summary>
    [TestMethod]
    public void CudaWithoutItsProviderIsAClearError()
    {
        MixAttentionModel? model = null;
        try
        {
            model = MixAttentionModel.Open(Rings, new ModelOptions { Device = ExecutionDevice.Cuda });
        }
        catch (MixAttentionException e)
        {
            StringAssert.Contains(e.Message, "CUDA was requested (ModelOptions.Device = Cuda");
            StringAssert.Contains(e.Message, "ExecutionDevice.Cpu");
            Assert.IsInstanceOfType<OnnxRuntimeException>(e.InnerException, "the provider's own error is kept as the cause");
        }
        model?.Dispose();
        if (model is not null) Assert.Inconclusive("the CUDA provider loads on this machine");
    }

    /// <summary>CUDA-graph decode asked for on the CPU: one clear error at Open (CUDA graphs are a CUDA provider feature).</summary>
    [TestMethod]
    public void CudaGraphDecodeOnCpuIsAClearError()
    {
        var e = Assert.ThrowsExactly<MixAttentionException>(() => MixAttentionModel.Open(Rings, new ModelOptions { CudaGraphDecode = true }));
        StringAssert.Contains(e.Message, "ModelOptions.CudaGraphDecode needs ModelOptions.Device = Cuda");
        StringAssert.Contains(e.Message, "Device = Cpu");
        // Off (the default) changes nothing on the CPU.
        using var model = MixAttentionModel.Open(Rings, new ModelOptions { CudaGraphDecode = false });
        using var session = model.CreateSession(Small);
        Assert.IsFalse(model.Options.CudaGraphDecode);
    }

    /// <summary>
    /// Which models CUDA-graph decode can capture (bench --cuda-graph runs the rest plain): ops-backend conversions
    /// only; ORT GQA and reference conversions and unconverted models each get a reason naming what to do.
    /// </summary>
    [TestMethod]
    public void CudaGraphDecodeBlockerNamesWhyAModelCannotBeCaptured()
    {
        CachePlan? PlanOf(string path) => CachePlan.FromModel(OnnxModel.Load(path).Proto);
        Assert.IsNull(InPlaceCacheSession.CudaGraphDecodeBlocker(PlanOf(RuntimeFixtures.Convert("mistral-torchscript"))));
        foreach (var backend in new[] { "ort-gqa", "reference" })
        {
            var why = InPlaceCacheSession.CudaGraphDecodeBlocker(PlanOf(RuntimeFixtures.Convert("mistral-torchscript", backend: backend)));
            Assert.IsNotNull(why, backend);
            StringAssert.Contains(why, $"backend '{backend}'");
            StringAssert.Contains(why, "ops backend");
        }
        StringAssert.Contains(InPlaceCacheSession.CudaGraphDecodeBlocker(PlanOf(TestPaths.Fixture("mistral-torchscript"))), "convert it with `mixattn convert`");
    }

    /// <summary>Device = Cuda with caller session options that lack the CUDA provider: the cache allocation says so.</summary>
    [TestMethod]
    public void CudaCachesWithoutACudaSessionIsAClearError()
    {
        using var options = new SessionOptions();
        using var model = MixAttentionModel.Open(Rings, new ModelOptions { Device = ExecutionDevice.Cuda, SessionOptions = options });
        var e = Assert.ThrowsExactly<MixAttentionException>(() => model.CreateSession(Small));
        StringAssert.Contains(e.Message, "the ORT session has no CUDA allocator: the SessionOptions passed in ModelOptions have no CUDA execution provider");
        Assert.AreEqual(1, model.References);
        Assert.ThrowsExactly<MixAttentionException>(() => MixAttentionModel.Open(Rings, new ModelOptions { DeviceId = -1 }));
    }

    // ---- dispose -------------------------------------------------------------------------------------------------

    private static void AssertDisposed(string type, Action act)
    {
        var e = Assert.ThrowsExactly<ObjectDisposedException>(act);
        Assert.AreEqual(type, e.ObjectName);
    }

    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void EveryCallAfterDisposeThrowsObjectDisposedAndDoubleDisposeIsHarmless(bool converted)
    {
        using var model = RuntimeFixtures.Open(converted ? Rings : Unconverted);
        var session = model.CreateSession(Small);
        var a = session.AddSequence();
        session.Prefill(a, new long[] { 1, 2 });
        string type = converted ? nameof(InPlaceCacheSession) : nameof(GrowingCacheSession);
        session.Dispose();
        session.Dispose();
        foreach (var act in new Action[]
        {
            () => session.AddSequence(), () => session.RemoveSequence(a), () => session.Reset(), () => session.Length(a),
            () => session.Prefill(a, new long[] { 1 }), () => session.Decode(new[] { a }, new long[] { 1 }), () => session.Memory(),
            () => _ = session.Sequences, () => _ = session.FreeSlots,
            () => new ContinuousBatchingGenerator(session).Run(new[] { new GenerationRequest(new long[] { 1 }, new GenerationOptions()) }),
        })
            AssertDisposed(type, act);
        Assert.AreEqual(1, model.References, "the disposed session released the model");
    }

    [TestMethod]
    public void DisposedCachesAndModelsAndTokenizersThrowObjectDisposed()
    {
        var model = RuntimeFixtures.Open(Rings);
        var session = (InPlaceCacheSession)model.CreateSession(Small);
        var a = session.AddSequence();
        session.Prefill(a, new long[] { 1 });
        session.Decode(new[] { a }, new long[] { 2 });
        // The caches belong to the session: disposed behind its back, the next step fails instead of writing freed memory
        // (the binding still holds views of it).
        session.Caches.Dispose();
        AssertDisposed(nameof(KvCacheSet), () => session.Decode(new[] { a }, new long[] { 3 }));
        AssertDisposed(nameof(KvCacheSet), () => _ = session.Caches.Caches);
        AssertDisposed(nameof(KvCacheSet), () => session.Caches.Memory());
        session.Dispose();
        model.Dispose();
        model.Dispose();
        AssertDisposed(nameof(MixAttentionModel), () => model.CreateSession(Small));
        AssertDisposed(nameof(MixAttentionModel), () => _ = model.Session);
        AssertDisposed(nameof(MixAttentionModel), () => new InPlaceCacheSession(model, Small));
        Assert.AreEqual(0, model.References);

        var tok = OrtExtensionsTokenizer.FromDirectory(Path.Combine(TestPaths.Graphs, "demo"));
        var ids = tok.Encode("hello");
        StringAssert.Contains(Assert.ThrowsExactly<MixAttentionException>(() => tok.Decode(new long[] { -1 })).Message, "outside the tokenizer's vocabulary");
        tok.Dispose();
        tok.Dispose();
        AssertDisposed(nameof(OrtExtensionsTokenizer), () => tok.Encode("hello"));
        AssertDisposed(nameof(OrtExtensionsTokenizer), () => tok.Decode(ids));
    }

    /// <summary>A session keeps its model alive: disposing the model first only stops new sessions; the last session releases it.</summary>
    [TestMethod]
    public void ASessionKeepsItsModelAliveUntilItIsDisposed()
    {
        var model = RuntimeFixtures.Open(Rings);
        var tokens = RuntimeFixtures.RandomTokens(7, 12);
        float[] Expected()
        {
            using var s = model.CreateSession(Small);
            var q = s.AddSequence();
            s.Prefill(q, tokens.AsSpan(0, 8));
            return s.Decode(new[] { q }, new[] { tokens[8] })[0];
        }
        var expected = Expected();
        var first = model.CreateSession(Small);
        var second = model.CreateSession(Small);
        Assert.AreEqual(3, model.References);
        model.Dispose();
        Assert.IsTrue(model.IsDisposed);
        AssertDisposed(nameof(MixAttentionModel), () => model.CreateSession(Small));
        Assert.AreEqual(2, model.References);
        var a = first.AddSequence();
        first.Prefill(a, tokens.AsSpan(0, 8));
        Assert.AreEqual(0f, Compare.MaxAbsDiff(expected, first.Decode(new[] { a }, new[] { tokens[8] })[0]));
        first.Dispose();
        second.Dispose();
        Assert.AreEqual(0, model.References, "the last session released the ORT session");
    }

    // ---- threads -------------------------------------------------------------------------------------------------

    /// <summary>
    /// One call at a time per session: while a step is held inside the model call on one thread, every call from another
    /// thread fails at once with InvalidOperationException; a Dispose from another thread waits for the step to end.
    /// </summary>
    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void ConcurrentCallsOnOneSessionAreRefused(bool converted)
    {
        using var model = RuntimeFixtures.Open(converted ? Rings : Unconverted);
        var session = model.CreateSession(Small);
        string type = converted ? nameof(InPlaceCacheSession) : nameof(GrowingCacheSession);
        var a = session.AddSequence();
        session.Prefill(a, new long[] { 1, 2, 3 });
        using var inside = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        int held = 0;
        void Hook(string op)
        {
            if (Interlocked.Exchange(ref held, 1) != 0) return;
            inside.Set();
            Assert.IsTrue(release.Wait(TimeSpan.FromSeconds(30)));
        }
        ((DecoderSession)session).BeforeRun = Hook;

        var running = Task.Run(() => session.Decode(new[] { a }, new long[] { 4 }));
        Assert.IsTrue(inside.Wait(TimeSpan.FromSeconds(30)));
        foreach (var act in new Action[]
        {
            () => session.Decode(new[] { a }, new long[] { 5 }), () => session.Prefill(a, new long[] { 5 }), () => session.AddSequence(),
            () => session.RemoveSequence(a), () => session.Length(a), () => session.Reset(),
        })
        {
            var e = Assert.ThrowsExactly<InvalidOperationException>(act);
            StringAssert.Contains(e.Message, $"{type} is not thread-safe: a Decode is already running on another thread");
        }
        session.Dispose(); // deferred: the held step still owns the caches and binding
        Assert.AreEqual(2, model.References);
        release.Set();
        var rows = running.GetAwaiter().GetResult();
        Assert.HasCount(Vocab, rows[0]);
        Assert.IsTrue(rows[0].All(float.IsFinite));
        Assert.AreEqual(1, model.References, "the step's end ran the deferred Dispose");
        AssertDisposed(type, () => session.Length(a));
    }

    /// <summary>Sessions of one model may run on different threads at once: each gets exactly its sequential logits.</summary>
    [TestMethod]
    public void SessionsOfOneModelRunConcurrently()
    {
        using var model = RuntimeFixtures.Open(WithGlobal);
        const int Threads = 3, Steps = 40;
        float[][] Run(int t, Barrier? start)
        {
            using var s = model.CreateSession(new SessionConfig { MaxLength = 64, PrefillChunk = 4 });
            var tokens = RuntimeFixtures.RandomTokens(50 + t, Steps + 6);
            var q = s.AddSequence();
            start?.SignalAndWait();
            var rows = new List<float[]> { s.Prefill(q, tokens.AsSpan(0, 6)) };
            for (int i = 0; i < Steps; i++) rows.Add(s.Decode(new[] { q }, new[] { tokens[6 + i] })[0]);
            return rows.ToArray();
        }
        var expected = Enumerable.Range(0, Threads).Select(t => Run(t, null)).ToArray();
        using var barrier = new Barrier(Threads);
        var got = Enumerable.Range(0, Threads).Select(t => Task.Factory.StartNew(() => Run(t, barrier), TaskCreationOptions.LongRunning)).ToArray();
        Task.WaitAll(got);
        for (int t = 0; t < Threads; t++)
            for (int i = 0; i <= Steps; i++)
                Assert.AreEqual(0f, Compare.MaxAbsDiff(expected[t][i], got[t].Result[i]), $"thread {t} step {i}");
    }
}
