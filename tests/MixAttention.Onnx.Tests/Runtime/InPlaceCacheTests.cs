using System.Diagnostics;
using System.Runtime.InteropServices;
using MixAttention.Onnx.Runtime;

namespace MixAttention.Onnx.Tests.Runtime;

[TestClass]
public sealed class InPlaceCacheTests
{
    /// <summary>
    /// The cache buffers never move, and the ops write into them: over 100 decode steps each step fills the ring slot of
    /// its position in the bound memory (poisoned with NaN at the start). The session runs with
    /// mixattention.require_inplace = 1, so the op would fail instead of copying had past and present differed.
    /// </summary>
    [TestMethod]
    public void CacheAddressesStayPutAndStepsWriteIntoThem()
    {
        using var model = RuntimeFixtures.Open(RuntimeFixtures.Convert("mistral-torchscript"));
        Assert.IsTrue(model.Options.RequireInPlace);
        using var session = (MixAttentionSession)model.CreateSession(new SessionConfig { MaxBatch = 2, MaxLength = 256, PrefillChunk = 4, PoisonCaches = true });
        var caches = session.Caches.Caches;
        var addresses = caches.Select(c => (c.KeyAddress, c.ValueAddress)).ToArray();
        var a = session.AddSequence();
        var b = session.AddSequence();
        session.Prefill(a, new long[] { 1, 2, 3 });
        session.Prefill(b, new long[] { 4 });
        var cache = caches[0];
        int d = cache.Entry.HeadSize;
        for (int step = 0; step < 100; step++)
        {
            int pos = session.Length(b);
            session.Decode(new[] { a, b }, new[] { (long)step % 50, (long)(step * 7) % 50 });
            CollectionAssert.AreEqual(addresses, caches.Select(c => (c.KeyAddress, c.ValueAddress)).ToArray(), $"step {step}");
            // Slot b = 1, KV head 0, ring slot pos % C: written this step (finite), in the memory we own.
            var row = new float[d];
            System.Runtime.InteropServices.Marshal.Copy(cache.KeyAddress + (nint)(cache.SlotBytes + (long)(pos % cache.Capacity) * d * 4), row, 0, d);
            foreach (var x in row) Assert.IsTrue(float.IsFinite(x), $"step {step}: key row of position {pos} was not written in place");
        }
        Assert.AreEqual(102L, session.Steps);
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct MallInfo2
    {
        public nuint Arena, Ordblks, Smblks, Hblks, Hblkhd, Usmblks, Fsmblks, Uordblks, Fordblks, Keepcost;
    }

    [DllImport("libc", EntryPoint = "mallinfo2")]
    private static extern MallInfo2 MallInfo();

    /// <summary>Bytes the C heap has handed out and not taken back (malloc'd chunks + mmapped blocks).</summary>
    private static long MallocInUse()
    {
        var m = MallInfo();
        return (long)m.Uordblks + (long)m.Hblkhd;
    }

    /// <summary>Native memory stays flat over 10,000 decode steps (RSS after GC, first 1,000 steps as warm-up).</summary>
    [TestMethod]
    public void ResidentMemoryStaysFlatOverTenThousandDecodeSteps()
    {
        using var model = RuntimeFixtures.Open(RuntimeFixtures.Convert("mistral-torchscript"));
        using var session = model.CreateSession(new SessionConfig { MaxBatch = 2, MaxLength = 16, PrefillChunk = 1 });
        var seqs = new[] { session.AddSequence(), session.AddSequence() };
        session.Prefill(seqs[0], new long[] { 1 });
        session.Prefill(seqs[1], new long[] { 2 });
        var tokens = new long[2];
        long Rss()
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            using var p = Process.GetCurrentProcess();
            p.Refresh();
            return p.WorkingSet64;
        }
        void Steps(int n)
        {
            for (int i = 0; i < n; i++)
            {
                var rows = session.Decode(seqs, tokens);
                tokens[0] = Sampler.ArgMax(rows[0]);
                tokens[1] = Sampler.ArgMax(rows[1]);
            }
        }
        Steps(1000);
        // RSS after every 1,000 steps. A per-step leak shows in every increment, so the median increment bounds it
        // (one-off jumps — JIT tiering, a runtime thread — do not move the median); the total bounds everything.
        var rss = new List<long> { Rss() };
        var heap = new List<long> { MallocInUse() };
        for (int k = 0; k < 9; k++)
        {
            Steps(1000);
            rss.Add(Rss());
            heap.Add(MallocInUse());
        }
        long Median(List<long> xs) => xs.Zip(xs.Skip(1), (x, y) => y - x).Order().ElementAt(xs.Count / 2);
        long heapMedian = Median(heap), rssTotal = rss[^1] - rss[0];
        Assert.AreEqual(10001, session.Length(seqs[0]), "every layer is a ring: the sequence outgrows MaxLength");
        // A leaked OrtValue, tensor or logits row per step (>= ~100 bytes) would add >= 100 KiB to every increment.
        Assert.IsLessThan(64L << 10, heapMedian, $"the C heap grows by a median {heapMedian / 1024} KiB per 1,000 steps ({string.Join(", ", heap)})");
        Assert.IsLessThan(8L << 20, rssTotal, $"RSS grew by {rssTotal / 1024} KiB over 9,000 steps ({string.Join(", ", rss.Select(x => x >> 10))} KiB)");
    }
}
