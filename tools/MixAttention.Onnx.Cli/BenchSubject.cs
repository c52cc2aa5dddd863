using System.Diagnostics;
using MixAttention.Onnx.Runtime;

namespace MixAttention.Onnx.Cli;

/// <summary>One model opened for a bench: its session, its sequences prefilled to the context, three warm-up steps
/// done; <see cref="Time"/> decodes and times steps (the sequences grow by one token a step).</summary>
internal sealed class BenchSubject : IDisposable
{
    private readonly BenchOptions _o;
    private readonly Microsoft.ML.OnnxRuntime.SessionOptions? _profiled;
    private readonly MixAttentionModel _model;
    private readonly IDecoderSession _session;
    private readonly List<int> _seqs = [];
    private readonly long[] _tokens;
    private readonly float[] _logits;
    private readonly InPlaceCacheSession? _onDevice;
    private readonly bool _cudaGraph;
    private readonly double? _graphMaxDiff;
    private readonly double _prefillTokensPerSecond;
    private readonly List<GcRound> _gc = [];
    private readonly List<GraphPhases> _graphPhases = [];
    private readonly List<RoundWindow> _windows = [];

    public string Path { get; }

    private BenchSubject(string path, BenchOptions o, Microsoft.ML.OnnxRuntime.SessionOptions? profiled, bool cudaGraph, double? graphMaxDiff,
        SessionConfig config)
    {
        Path = path;
        _o = o;
        _profiled = profiled;
        _cudaGraph = cudaGraph;
        _graphMaxDiff = graphMaxDiff;
        _model = MixAttentionModel.Open(path, new ModelOptions { Device = o.Device, SessionOptions = profiled, CudaGraphDecode = cudaGraph });
        try
        {
            _session = _model.CreateSession(config);
            var rng = new Random(1);
            int vocab = Math.Max(2, Math.Min(_model.VocabSize, 1000));
            var prefillClock = new Stopwatch();
            for (int b = 0; b < o.Batch; b++)
            {
                var s = _session.AddSequence();
                var prompt = Enumerable.Range(0, o.Context).Select(_ => (long)rng.Next(vocab)).ToArray();
                prefillClock.Start(); // each call returns host logits, so the GPU work is done when it returns
                _session.Prefill(s, prompt);
                prefillClock.Stop();
                _seqs.Add(s);
            }
            _prefillTokensPerSecond = (double)o.Batch * o.Context / prefillClock.Elapsed.TotalSeconds;
            _tokens = _seqs.Select(_ => (long)rng.Next(vocab)).ToArray();
            // Logits go to one reused buffer (the allocation-free Decode overload), as a serving loop would sample
            // them, or stay in the model's memory with --device-logits.
            _logits = new float[o.Batch * _session.VocabSize];
            _onDevice = o.DeviceLogits ? _session as InPlaceCacheSession : null;
            if (o.DeviceLogits && _onDevice is null)
                Console.Error.WriteLine($"bench {path}: logits copied to the host: only converted models with preallocated caches decode with DecodeOnDevice.");
            for (int i = 0; i < 3; i++) Step();
        }
        catch
        {
            _session?.Dispose();
            _model.Dispose();
            throw;
        }
    }

    public static BenchSubject Open(string path, BenchOptions o, string? profilePrefix)
    {
        // Profiling needs our own SessionOptions; the model then leaves the execution provider to us.
        var profiled = profilePrefix is null ? null : new Microsoft.ML.OnnxRuntime.SessionOptions { ProfileOutputPathPrefix = profilePrefix, EnableProfiling = true };
        try
        {
            bool cudaGraph = o.CudaGraph;
            int checkGraph = o.CheckGraph;
            if (profiled is not null && o.Device == ExecutionDevice.Cuda)
            {
                if (cudaGraph)
                {
                    using var cuda = new Microsoft.ML.OnnxRuntime.OrtCUDAProviderOptions();
                    cuda.UpdateOptions(new Dictionary<string, string> { ["device_id"] = "0", ["enable_cuda_graph"] = "1" });
                    profiled.AppendExecutionProvider_CUDA(cuda);
                }
                else profiled.AppendExecutionProvider_CUDA(0);
            }
            if (cudaGraph && CudaGraphBlocker(path) is { } why)
            {
                // Models that cannot be captured (ORT GQA conversions, unconverted models) run plain in the same
                // run, so one bench compares a graphed conversion with the baselines; the JSON's cuda_graph says
                // which ran how.
                Console.Error.WriteLine($"bench {path}: decoding without CUDA graphs: {why}");
                cudaGraph = false;
                checkGraph = 0;
            }
            var config = new SessionConfig
            {
                MaxBatch = o.Batch, MaxLength = o.Context + o.TimedSteps + Math.Max(checkGraph, 4) + 4, PrefillChunk = Math.Min(o.Chunk, o.Context),
            };
            double? maxDiff = checkGraph > 0 ? CheckGraph(path, o.Device, config, o.Context, checkGraph) : null;
            return new BenchSubject(path, o, profiled, cudaGraph, maxDiff, config);
        }
        catch
        {
            profiled?.Dispose();
            throw;
        }
    }

    private void Step()
    {
        if (_onDevice is not null) _onDevice.DecodeOnDevice(_seqs, _tokens);
        else _session.Decode(_seqs, _tokens, _logits);
    }

    /// <summary>
    /// Decodes <paramref name="steps"/> steps; returns ms per step. With <paramref name="collect"/> a full, blocking
    /// garbage collection runs first, so garbage left by earlier work (another model's steps, a prefill) is not
    /// collected on this model's clock (the ORT-GQA models allocated a 4 MB attention mask a step at 16 × 32K before
    /// the mask buffer was reused; docs/benchmarks.md).
    /// </summary>
    public double Time(int steps, bool profilerRange, bool collect)
    {
        if (collect)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
        }
        var graphBefore = (_session as InPlaceCacheSession)?.CudaGraphStepTime;
        int g0 = GC.CollectionCount(0), g1 = GC.CollectionCount(1), g2 = GC.CollectionCount(2);
        var pause = GC.GetTotalPauseDuration();
        long allocated = GC.GetAllocatedBytesForCurrentThread();
        double ms;
        var start = DateTime.UtcNow;
        using (profilerRange ? new CudaProfilerRange() : null)
        {
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < steps; i++) Step();
            clock.Stop();
            ms = clock.Elapsed.TotalMilliseconds / steps;
        }
        _windows.Add(new RoundWindow(start, DateTime.UtcNow));
        _gc.Add(new GcRound(GC.CollectionCount(0) - g0, GC.CollectionCount(1) - g1, GC.CollectionCount(2) - g2,
            (GC.GetTotalPauseDuration() - pause).TotalMilliseconds, (GC.GetAllocatedBytesForCurrentThread() - allocated) / steps));
        if ((_session as InPlaceCacheSession)?.CudaGraphStepTime is { } after)
        {
            var before = graphBefore ?? default;
            _graphPhases.Add(new GraphPhases((after.Inputs - before.Inputs).TotalMilliseconds / steps, (after.Replay - before.Replay).TotalMilliseconds / steps,
                (after.Logits - before.Logits).TotalMilliseconds / steps));
        }
        return ms;
    }

    public BenchResult Result(IReadOnlyList<double> roundMs, double? speedup = null, IReadOnlyList<int>? positions = null)
    {
        double ms = BenchVerb.Median(roundMs);
        return new BenchResult(Path, _o.Context, _o.Batch, ms, roundMs, positions ?? [], speedup, _o.Batch * 1000.0 / ms, _prefillTokensPerSecond, _session.Memory(),
            _cudaGraph, (_session as InPlaceCacheSession)?.CudaGraphTransfer, _graphMaxDiff, _onDevice is not null, _gc, _graphPhases, _windows);
    }

    public void Dispose()
    {
        if (_profiled is not null) Console.Error.WriteLine($"ORT profile of {Path}: {_model.Session.EndProfiling()}");
        _session.Dispose();
        _model.Dispose();
        _profiled?.Dispose();
    }

    private static string? CudaGraphBlocker(string path)
    {
        var model = MixAttention.Onnx.Onnx.OnnxModel.Load(path); // the graph only: external weights stay on disk
        return InPlaceCacheSession.CudaGraphDecodeBlocker(MixAttention.Onnx.Plan.CachePlan.FromModel(model.Proto));
    }

    /// <summary>
    /// Decodes <paramref name="steps"/> steps of the same random prompts and tokens with and without CUDA graphs (two
    /// models opened one after the other) and returns the largest |logit difference| over all steps and sequences.
    /// The first half of the steps decodes every sequence; in the second half, odd steps leave every other sequence out
    /// but keep the first and the last, so rows skipped with new_lengths = 0 are covered while the plain step still runs
    /// the same rows as the graph step (fewer rows would change the GEMMs' shapes and their fp16 rounding). Both maxima
    /// are printed.
    /// </summary>
    private static double CheckGraph(string path, ExecutionDevice device, SessionConfig config, int context, int steps)
    {
        int full = Math.Max(1, steps / 2);
        List<float[][]> Decode(bool graph)
        {
            using var model = MixAttentionModel.Open(path, new ModelOptions { Device = device, CudaGraphDecode = graph });
            using var session = model.CreateSession(config);
            var rng = new Random(7);
            int vocab = Math.Max(2, Math.Min(model.VocabSize, 1000));
            var seqs = new List<int>();
            for (int b = 0; b < config.MaxBatch; b++)
            {
                var s = session.AddSequence();
                session.Prefill(s, Enumerable.Range(0, Math.Max(1, Math.Min(context, 1024) - b)).Select(_ => (long)rng.Next(vocab)).ToArray());
                seqs.Add(s);
            }
            var all = new List<float[][]>();
            for (int i = 0; i < steps; i++)
            {
                var step = seqs.Where((_, k) => i < full || i % 2 == 0 || k % 2 == 0 || k == seqs.Count - 1).ToList();
                all.Add(session.Decode(step, step.Select(_ => (long)rng.Next(vocab)).ToArray()));
            }
            if (graph) Console.Error.WriteLine($"check-graph: transfer {(session as InPlaceCacheSession)?.CudaGraphTransfer}");
            return all;
        }
        var plain = Decode(false);
        var graphed = Decode(true);
        double max = 0, maxFull = 0, largest = 0;
        for (int i = 0; i < plain.Count; i++)
            for (int k = 0; k < plain[i].Length; k++)
                for (int j = 0; j < plain[i][k].Length; j++)
                {
                    double d = Math.Abs(plain[i][k][j] - graphed[i][k][j]);
                    if (d > max || double.IsNaN(d)) max = double.IsNaN(max) ? max : d; // NaN sticks
                    if (i < full && (d > maxFull || double.IsNaN(d))) maxFull = double.IsNaN(maxFull) ? maxFull : d;
                    largest = Math.Max(largest, Math.Abs(plain[i][k][j]));
                }
        Console.Error.WriteLine($"check-graph {path}: {steps} steps × {config.MaxBatch} sequences, max |logits(graph) - logits(plain)| = {max:G4} " +
            $"(first {full} steps, every sequence: {maxFull:G4}; largest |logit| {largest:G4})");
        return max;
    }
}
