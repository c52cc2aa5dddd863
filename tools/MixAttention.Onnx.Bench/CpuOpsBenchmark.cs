using System.Diagnostics;
using MixAttention.Onnx.Runtime.Native;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace MixAttention.Onnx.Bench;

/// <summary>
/// Decode (S = 1) attention for one layer, fp32, CPU: our WindowedAttention vs ORT's GroupQueryAttention on the
/// same shapes, both with their caches bound past = present through IO binding. Sliding layer: ours a ring of
/// C = W, GQA sliding_window_cache=1 with C = W (and, as a second reference, GQA with local_window_size over a
/// full-length cache C = T). Global layer: both C = T, and ours also over a paged pool (the same rows in blocks of
/// <see cref="PagedBlockSize"/> positions, shuffled, read through a block table). T = tokens after the step (past = T - 1).
/// </summary>
internal static class CpuOpsBenchmark
{
    private sealed record Options(int Heads, int KvHeads, int HeadDim, int Window, int Threads, bool Quick, bool FullCache);

    private const int PagedBlockSize = 64;

    public static int Run(string[] args)
    {
        var o = new Options(32, 8, 128, 1024, Environment.ProcessorCount, false, true);
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--quick": o = o with { Quick = true }; break;
                case "--no-full-cache": o = o with { FullCache = false }; break;
                case "--threads": o = o with { Threads = int.Parse(args[++i]) }; break;
                case "--heads": o = o with { Heads = int.Parse(args[++i]) }; break;
                case "--kv-heads": o = o with { KvHeads = int.Parse(args[++i]) }; break;
                case "--head-dim": o = o with { HeadDim = int.Parse(args[++i]) }; break;
                case "--window": o = o with { Window = int.Parse(args[++i]) }; break;
                default: Console.Error.WriteLine($"unknown option {args[i]}"); return 2;
            }
        }
        int[] lengths = o.Quick ? [1024, 8192] : [1024, 8192, 32768];
        int[] batches = o.Quick ? [1] : [1, 8];
        Console.WriteLine($"cpu-ops: decode S=1, fp32, Hq={o.Heads}, Hkv={o.KvHeads}, D={o.HeadDim}, W={o.Window}, " +
                          $"intra-op threads={o.Threads}, {Environment.ProcessorCount} logical CPUs, ORT {OrtEnv.Instance().GetVersionString()}");
        Console.WriteLine("times: median ms per Run (RunWithBinding, caches bound past = present); ratio = GQA / ours (> 1: ours faster)");
        Console.WriteLine();
        Console.WriteLine($"paged = ours over a pool of {PagedBlockSize}-position blocks in shuffled order; paged speed = ours ms / paged ms");
        Console.WriteLine();
        Console.WriteLine("| layer | T | B | ours ms | GQA ms | ratio | GQA C=T ms | ratio | paged ms | paged speed | max abs diff |");
        Console.WriteLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        var total = Stopwatch.StartNew();
        // An untimed cell first: the runtime's tier-up JIT and first-touch page faults of the opening seconds would
        // otherwise fall on the second cell (on a 2-vCPU machine it ran 1.7–3× slower than the same work later).
        Measure(o, sliding: false, 1024, batches[^1]);
        foreach (bool sliding in new[] { true, false })
            foreach (int t in lengths)
                foreach (int b in batches)
                {
                    var row = Measure(o, sliding, t, b);
                    string full = row.GqaFullMs is double f ? $"{f:F3} | {f / row.OursMs:F2}x" : "- | -";
                    string paged = row.PagedMs is double p ? $"{p:F3} | {row.OursMs / p:F2}x" : "- | -";
                    Console.WriteLine($"| {(sliding ? $"sliding W={o.Window}" : "global")} | {t} | {b} | {row.OursMs:F3} | {row.GqaMs:F3} | " +
                                      $"{row.GqaMs / row.OursMs:F2}x | {full} | {paged} | {row.MaxDiff:E1} |");
                }
        Console.WriteLine();
        Console.WriteLine($"total {total.Elapsed.TotalSeconds:F0} s");
        return 0;
    }

    private sealed record Row(double OursMs, double GqaMs, double? GqaFullMs, double? PagedMs, double MaxDiff);

    private static Row Measure(Options o, bool sliding, int t, int b)
    {
        int window = sliding ? o.Window : 0;
        int capacity = sliding ? Math.Min(o.Window, t) : t;
        var rng = new Random(t * 31 + b);
        var q = Fill(new float[b * o.Heads * o.HeadDim], rng);
        var k = Fill(new float[b * o.KvHeads * o.HeadDim], rng);
        var v = Fill(new float[b * o.KvHeads * o.HeadDim], rng);

        // GQA's windowed cache: rows [0, L) hold positions T-1-L .. T-2 in order; ours: slot = pos mod C.
        long cacheElems = (long)b * o.KvHeads * capacity * o.HeadDim;
        float[] gqaOut, oursOut;
        double gqaMs, oursMs;
        double? pagedMs = null;
        using (var gk = Allocate(cacheElems, rng, [b, o.KvHeads, capacity, o.HeadDim]))
        using (var gv = Allocate(cacheElems, rng, [b, o.KvHeads, capacity, o.HeadDim]))
        {
            (oursMs, oursOut) = RunOurs(o, b, t, window, capacity, q, k, v, gk, gv);
            if (!sliding)
            {
                (double ms, float[] pagedOut) = RunPaged(o, b, t, q, k, v, gk, gv);
                // The same rows in another order: equal up to fp32 summation order (docs/ops.md, "Paged caches").
                double d = oursOut.Zip(pagedOut, (x, y) => Math.Abs(x - y)).Max();
                if (d > 1e-5)
                    throw new InvalidOperationException($"paged output differs from the contiguous one by {d:E1} (T = {t}, B = {b})");
                pagedMs = ms;
            }
            (gqaMs, gqaOut) = RunGqa(o, b, t, sliding ? o.Window : -1, sliding, capacity, q, k, v, gk, gv);
        }
        double? fullMs = null;
        if (sliding && o.FullCache)
        {
            long fullElems = (long)b * o.KvHeads * t * o.HeadDim;
            using var fk = Allocate(fullElems, rng, [b, o.KvHeads, t, o.HeadDim]);
            using var fv = Allocate(fullElems, rng, [b, o.KvHeads, t, o.HeadDim]);
            (fullMs, _) = RunGqa(o, b, t, o.Window, false, t, q, k, v, fk, fv);
        }
        double diff = oursOut.Zip(gqaOut, (x, y) => Math.Abs(x - y)).Max();
        return new Row(oursMs, gqaMs, fullMs, pagedMs, diff);
    }

    // Ours over a paged pool: the global cache's rows (GQA's buffer, positions 0 .. T-2 in order) in blocks of
    // PagedBlockSize positions, the pool's blocks shuffled; block_table [B, T / PagedBlockSize].
    private static (double, float[]) RunPaged(Options o, int b, int t, float[] q, float[] k, float[] v, OrtValue keys, OrtValue values)
    {
        int bs = PagedBlockSize, perSeq = (t + bs - 1) / bs, blocks = b * perSeq, d = o.HeadDim, h = o.KvHeads;
        var order = Enumerable.Range(0, blocks).ToArray();
        new Random(t + b).Shuffle(order);
        var table = new int[blocks];  // table[s * perSeq + i] = pool block of sequence s's logical block i
        for (int i = 0; i < blocks; i++) table[i] = order[i];
        using var pk = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, TensorElementType.Float, [blocks, h, bs, d]);
        using var pv = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, TensorElementType.Float, [blocks, h, bs, d]);
        foreach (var (src, dst) in new[] { (keys, pk), (values, pv) })
        {
            var s = src.GetTensorDataAsSpan<float>();
            var x = dst.GetTensorMutableDataAsSpan<float>();
            for (int seq = 0; seq < b; seq++)
                for (int head = 0; head < h; head++)
                    for (int pos = 0; pos < t; pos++)
                    {
                        long from = (((long)seq * h + head) * t + pos) * d;
                        long to = (((long)table[seq * perSeq + pos / bs] * h + head) * bs + pos % bs) * d;
                        s.Slice((int)from, d).CopyTo(x.Slice((int)to, d));
                    }
        }
        using var session = Session(o, BenchModels.Ours(o.Heads, o.KvHeads, 0, paged: true));
        var pastLengths = Enumerable.Repeat(t - 1, b).ToArray();
        return Time(session, b, o, q, k, v, pk, pv,
            [("past_lengths", OrtValue.CreateTensorValueFromMemory(pastLengths, [b])),
             ("block_table", OrtValue.CreateTensorValueFromMemory(table, [b, perSeq]))]);
    }

    // Ours: the ring/global cache gets the same K/V as GQA's buffer, rotated to slot = pos mod C.
    private static (double, float[]) RunOurs(Options o, int b, int t, int window, int capacity, float[] q, float[] k, float[] v,
        OrtValue gqaKeys, OrtValue gqaValues)
    {
        int past = t - 1, resident = Math.Min(past, capacity), d = o.HeadDim;
        long elems = (long)b * o.KvHeads * capacity * d;
        using var ck = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, TensorElementType.Float, [b, o.KvHeads, capacity, d]);
        using var cv = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, TensorElementType.Float, [b, o.KvHeads, capacity, d]);
        foreach (var (src, dst) in new[] { (gqaKeys, ck), (gqaValues, cv) })
        {
            var s = src.GetTensorDataAsSpan<float>();
            var x = dst.GetTensorMutableDataAsSpan<float>();
            for (long bh = 0; bh < (long)b * o.KvHeads; bh++)
                for (int row = 0; row < resident; row++)
                {
                    long pos = past - resident + row;
                    s.Slice((int)((bh * capacity + row) * d), d).CopyTo(x.Slice((int)((bh * capacity + pos % capacity) * d), d));
                }
        }
        using var session = Session(o, BenchModels.Ours(o.Heads, o.KvHeads, window));
        var pastLengths = Enumerable.Repeat(past, b).ToArray();
        return Time(session, b, o, q, k, v, ck, cv, [("past_lengths", OrtValue.CreateTensorValueFromMemory(pastLengths, [b]))]);
    }

    private static (double, float[]) RunGqa(Options o, int b, int t, int localWindow, bool windowedCache, int capacity,
        float[] q, float[] k, float[] v, OrtValue keys, OrtValue values)
    {
        using var session = Session(o, BenchModels.Gqa(o.Heads, o.KvHeads, localWindow, windowedCache));
        var seqlens = Enumerable.Repeat(t - 1, b).ToArray(); // absolute: T - 1
        return Time(session, b, o, q, k, v, keys, values,
            [("seqlens_k", OrtValue.CreateTensorValueFromMemory(seqlens, [b])),
             ("total_sequence_length", OrtValue.CreateTensorValueFromMemory(new[] { t }, []))]);
    }

    private static (double, float[]) Time(InferenceSession session, int b, Options o, float[] q, float[] k, float[] v,
        OrtValue keys, OrtValue values, (string Name, OrtValue Value)[] extra)
    {
        var output = new float[b * o.Heads * o.HeadDim];
        using var qv = OrtValue.CreateTensorValueFromMemory(q, [b, 1, o.Heads * o.HeadDim]);
        using var kv = OrtValue.CreateTensorValueFromMemory(k, [b, 1, o.KvHeads * o.HeadDim]);
        using var vv = OrtValue.CreateTensorValueFromMemory(v, [b, 1, o.KvHeads * o.HeadDim]);
        using var ov = OrtValue.CreateTensorValueFromMemory(output, [b, 1, o.Heads * o.HeadDim]);
        using var binding = session.CreateIoBinding();
        using var runOptions = new RunOptions();
        binding.BindInput("query", qv);
        binding.BindInput("key", kv);
        binding.BindInput("value", vv);
        binding.BindInput("past_key", keys);
        binding.BindInput("past_value", values);
        foreach (var (name, value) in extra) binding.BindInput(name, value);
        binding.BindOutput("output", ov);
        binding.BindOutput("present_key", keys);     // in place: same OrtValue as past
        binding.BindOutput("present_value", values);
        try
        {
            session.RunWithBinding(runOptions, binding); // warm-up; its output is the one compared
            var first = (float[])output.Clone();
            var sw = Stopwatch.StartNew();
            session.RunWithBinding(runOptions, binding);
            double once = sw.Elapsed.TotalMilliseconds;
            int repeats = (int)Math.Clamp(2000 / Math.Max(once, 0.01), 5, 200); // ~2 s per measurement
            var times = new double[repeats];
            for (int i = 0; i < repeats; i++)
            {
                sw.Restart();
                session.RunWithBinding(runOptions, binding);
                times[i] = sw.Elapsed.TotalMilliseconds;
            }
            Array.Sort(times);
            return (times[repeats / 2], first);
        }
        finally
        {
            foreach (var (_, value) in extra) value.Dispose();
        }
    }

    private static InferenceSession Session(Options o, byte[] model)
    {
        using var options = new SessionOptions { IntraOpNumThreads = o.Threads, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        options.RegisterCustomOpLibrary(NativeLibraryPath.GetRequired());
        return new InferenceSession(model, options);
    }

    private static OrtValue Allocate(long elems, Random rng, long[] shape)
    {
        var value = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, TensorElementType.Float, shape);
        var span = value.GetTensorMutableDataAsSpan<float>();
        var block = Fill(new float[1 << 16], rng);
        for (long i = 0; i < elems; i += block.Length)
            block.AsSpan(0, (int)Math.Min(block.Length, elems - i)).CopyTo(span.Slice((int)i));
        return value;
    }

    private static float[] Fill(float[] a, Random rng)
    {
        for (int i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
        return a;
    }
}
