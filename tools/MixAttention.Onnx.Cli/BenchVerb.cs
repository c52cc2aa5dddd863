using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using MixAttention.Onnx.Runtime;
using Spectre.Console;

namespace MixAttention.Onnx.Cli;

/// <summary>
/// <c>mixattn bench MODEL [MODEL…] [--context N] [--batch N] [--steps N] [--rounds N [--rotate-order]] [--device cpu|cuda] [--cuda-graph] [--check-graph N] [--cuda-profiler-range] [--device-logits] [--no-collect] [--budget-gib G] [--json]</c>:
/// decode throughput and KV memory of each model measured in the same run, the first model being the baseline.
/// </summary>
internal static class BenchVerb
{
    public static Command Create()
    {
        var models = new Argument<string[]>("MODEL") { Description = "Models to compare (converted or not); the first is the baseline.", Arity = ArgumentArity.OneOrMore };
        var context = new Option<int>("--context") { Description = "Tokens each sequence holds before the timed decode steps (filled by chunked prefill).", DefaultValueFactory = _ => 512 };
        var batch = new Option<int>("--batch") { Description = "Sequences decoded together.", DefaultValueFactory = _ => 1 };
        var steps = new Option<int>("--steps") { Description = "Timed decode steps (after 3 warm-up steps), per round.", DefaultValueFactory = _ => 32 };
        var rounds = new Option<int>("--rounds") { Description = "Timed rounds. 1: each model is opened, prefilled, timed and closed in turn. N > 1: every model is opened and prefilled first, then the models take turns, --steps steps each, N times, so a drift during the run, or an effect of the model timed just before (seen on an H200: docs/benchmarks.md), hits each model alike; ms / step is then the median over rounds and each speedup the median of the per-round ratios. Needs every model's caches in memory at once.", DefaultValueFactory = _ => 1 };
        var rotate = new Option<bool>("--rotate-order") { Description = "With --rounds: round r starts with model r mod (models) and goes on in the given order, so every model is timed in every position equally often (the order of the models within a round was seen to matter: docs/benchmarks.md). The JSON's decode_ms_per_step_rounds stay in round order." };
        var chunk = new Option<int>("--prefill-chunk") { Description = "Prefill call length (the prefill tokens/s column times these calls; shared sliding rings hold W + chunk - 1 rows).", DefaultValueFactory = _ => 256 };
        var device = new Option<string>("--device") { Description = "cpu or cuda.", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var budget = new Option<double>("--budget-gib") { Description = "KV memory budget for the 'sequences that fit' column.", DefaultValueFactory = _ => 16 };
        var json = new Option<bool>("--json") { Description = "Print the results as JSON." };
        var profile = new Option<string?>("--ort-profile") { Description = "Write ONNX Runtime's profile of each model's runs to files starting with this prefix (paths on stderr); see tools/gpu/e2e/profile_summary.py." };
        var cudaGraph = new Option<bool>("--cuda-graph") { Description = "Decode steps as CUDA graph replays (ModelOptions.CudaGraphDecode; --device cuda) for the models that allow it (ops-backend conversions); the others run without, in the same run (the JSON's cuda_graph says which)." };
        var checkGraph = new Option<int>("--check-graph") { Description = "With --cuda-graph: also decode N steps of the same prompts and tokens without CUDA graphs and print the largest |logit difference|.", DefaultValueFactory = _ => 0 };
        var deviceLogits = new Option<bool>("--device-logits") { Description = "Timed steps leave the logits in the model's memory (MixAttentionSession.DecodeOnDevice) instead of copying them to the host; models without it copy (the JSON's logits says which)." };
        var noCollect = new Option<bool>("--no-collect") { Description = "Skip the full garbage collection before each timed round (by default garbage from earlier work is collected before a model's clock starts; the JSON's gc_rounds says what the collector did inside each round)." };
        var profilerRange = new Option<bool>("--cuda-profiler-range") { Description = "Bracket the timed decode steps with cudaProfilerStart/Stop, for `nsys profile --capture-range=cudaProfilerApi` (--device cuda)." };
        var cmd = new Command("bench", "Decode tokens/s and KV memory of one or more models at a given context and batch, measured in one run; ratios are against the first model.\n\n" +
            "Example:\n  mixattn bench graphs/gemma3-torchscript/model.onnx out/gemma3-cai/model.onnx --context 1024 --batch 4")
        {
            models, context, batch, steps, rounds, rotate, chunk, device, budget, json, profile, cudaGraph, checkGraph, profilerRange, deviceLogits, noCollect,
        };
        cmd.SetAction(parse =>
        {
            var paths = parse.GetValue(models)!;
            int nRounds = parse.GetValue(rounds), nSteps = parse.GetValue(steps);
            if (parse.GetValue(context) < 1 || parse.GetValue(batch) < 1 || nSteps < 1) throw new MixAttentionException("--context, --batch and --steps must be >= 1.");
            if (nRounds < 1) throw new MixAttentionException("--rounds must be >= 1.");
            if (parse.GetValue(chunk) < 1) throw new MixAttentionException("--prefill-chunk must be >= 1.");
            if (!(parse.GetValue(budget) > 0) || parse.GetValue(budget) > 1L << 30) throw new MixAttentionException($"--budget-gib must be a positive number of GiB, got {parse.GetValue(budget)}.");
            if ((long)nSteps * nRounds > int.MaxValue / 2) throw new MixAttentionException("--steps × --rounds is too large.");
            if (parse.GetValue(checkGraph) < 0) throw new MixAttentionException("--check-graph must be >= 0 (decode steps compared).");
            if (parse.GetValue(checkGraph) > 0 && !parse.GetValue(cudaGraph)) throw new MixAttentionException("--check-graph compares CUDA-graph decode with plain decode; pass --cuda-graph too.");
            bool collect = !parse.GetValue(noCollect);
            if (parse.GetValue(rotate) && nRounds == 1) throw new MixAttentionException("--rotate-order changes the order of interleaved rounds; pass --rounds N (N > 1) too.");
            var options = new BenchOptions(parse.GetValue(context), parse.GetValue(batch), nSteps * nRounds, parse.GetValue(chunk),
                parse.GetValue(device) == "cuda" ? ExecutionDevice.Cuda : ExecutionDevice.Cpu, parse.GetValue(cudaGraph), parse.GetValue(checkGraph),
                parse.GetValue(deviceLogits));
            string? Prefix(int i) => parse.GetValue(profile) is { } prefix ? $"{prefix}{i}" : null;
            var results = new List<BenchResult>();
            if (nRounds == 1)
            {
                for (int i = 0; i < paths.Length; i++)
                {
                    using var subject = BenchSubject.Open(paths[i], options, Prefix(i));
                    results.Add(subject.Result([subject.Time(nSteps, parse.GetValue(profilerRange), collect)], positions: [i]));
                }
            }
            else
            {
                var subjects = new List<BenchSubject>();
                try
                {
                    for (int i = 0; i < paths.Length; i++) subjects.Add(BenchSubject.Open(paths[i], options, Prefix(i)));
                    var ms = subjects.Select(_ => new double[nRounds]).ToArray();
                    var position = subjects.Select(_ => new int[nRounds]).ToArray();
                    int n = subjects.Count;
                    for (int r = 0; r < nRounds; r++)
                        for (int k = 0; k < n; k++)
                        {
                            int i = parse.GetValue(rotate) ? (r + k) % n : k;
                            position[i][r] = k;
                            ms[i][r] = subjects[i].Time(nSteps, parse.GetValue(profilerRange), collect);
                        }
                    for (int i = 0; i < subjects.Count; i++)
                        results.Add(subjects[i].Result(ms[i], Median(ms[0].Zip(ms[i], (a, b) => a / b)), position[i]));
                }
                finally
                {
                    foreach (var subject in subjects) subject.Dispose();
                }
            }
            long budgetBytes = (long)(parse.GetValue(budget) * (1L << 30));
            if (parse.GetValue(json))
            {
                var arr = new JsonArray(results.Select(r => (JsonNode)new JsonObject
                {
                    ["model"] = r.Path, ["context"] = r.Context, ["batch"] = r.Batch, ["steps"] = nSteps, ["rounds"] = nRounds, ["rotate_order"] = parse.GetValue(rotate),
                    ["decode_ms_per_step"] = r.MsPerStep, ["decode_ms_per_step_rounds"] = new JsonArray(r.RoundMs.Select(x => (JsonNode)x).ToArray()),
                    ["round_positions"] = new JsonArray(r.RoundPositions.Select(x => (JsonNode)x).ToArray()),
                    ["gc_rounds"] = new JsonArray(r.Gc.Select(g => (JsonNode)new JsonObject
                    {
                        ["gen0"] = g.Gen0, ["gen1"] = g.Gen1, ["gen2"] = g.Gen2, ["pause_ms"] = g.PauseMs, ["allocated_bytes_per_step"] = g.AllocatedBytesPerStep,
                    }).ToArray()),
                    ["collect_before_rounds"] = collect,
                    ["graph_step_ms_rounds"] = new JsonArray(r.GraphPhases.Select(g => (JsonNode)new JsonObject { ["inputs"] = g.InputsMs, ["replay"] = g.ReplayMs, ["logits"] = g.LogitsMs }).ToArray()),
                    ["round_utc"] = new JsonArray(r.Windows.Select(w => (JsonNode)new JsonObject { ["start"] = w.StartUtc.ToString("O"), ["end"] = w.EndUtc.ToString("O") }).ToArray()),
                    ["tokens_per_second"] = r.TokensPerSecond,
                    ["prefill_tokens_per_second"] = r.PrefillTokensPerSecond,
                    ["speedup"] = r.Speedup ?? r.TokensPerSecond / results[0].TokensPerSecond,
                    ["kv_bytes_per_sequence"] = r.Memory.BytesPerSequence, ["kv_bytes_allocated"] = r.Memory.AllocatedBytes,
                    ["sequences_in_budget"] = r.Memory.BytesPerSequence == 0 ? 0 : budgetBytes / r.Memory.BytesPerSequence,
                    ["logits"] = r.LogitsOnDevice ? "device" : "host",
                    ["cuda_graph"] = r.CudaGraph, ["graph_transfer"] = r.GraphTransfer, ["graph_max_abs_diff"] = r.GraphMaxAbsDiff is { } g && double.IsNaN(g) ? "NaN" : r.GraphMaxAbsDiff,
                }).ToArray());
                Console.WriteLine(new JsonObject { ["device"] = parse.GetValue(device), ["cuda_graph"] = parse.GetValue(cudaGraph), ["budget_bytes"] = budgetBytes, ["results"] = arr }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
                return ExitCodes.Ok;
            }
            if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
            var table = new Table().Border(TableBorder.Simple).Title($"decode at context {parse.GetValue(context)}, batch {parse.GetValue(batch)}, {parse.GetValue(device)}{(parse.GetValue(cudaGraph) ? ", CUDA graphs" : "")}{(nRounds > 1 ? $", median of {nRounds} interleaved rounds{(parse.GetValue(rotate) ? " (rotating order)" : "")}" : "")}");
            foreach (var h in new[] { "model", "ms / step", "tokens/s", "vs first", "prefill tokens/s", "KV / sequence", $"sequences in {parse.GetValue(budget)} GiB" })
                table.AddColumn(h);
            foreach (var r in results)
                table.AddRow(Markup.Escape(r.Path), $"{r.MsPerStep:0.000}", $"{r.TokensPerSecond:0}", $"{r.Speedup ?? r.TokensPerSecond / results[0].TokensPerSecond:0.00}×", $"{r.PrefillTokensPerSecond:0}",
                    Cli.Bytes(r.Memory.BytesPerSequence), r.Memory.BytesPerSequence == 0 ? "-" : (budgetBytes / r.Memory.BytesPerSequence).ToString("N0"));
            AnsiConsole.Write(table);
            return ExitCodes.Ok;
        });
        return cmd;
    }

    private sealed record BenchOptions(int Context, int Batch, int TimedSteps, int Chunk, ExecutionDevice Device, bool CudaGraph, int CheckGraph, bool DeviceLogits);

    /// <param name="RoundMs">ms per step of each timed round (one entry without --rounds).</param>
    /// <param name="Speedup">the median of the per-round ratios against the first model (--rounds), else null.</param>
    /// <param name="RoundPositions">the model's place in the timing order of each round (0 = timed first).</param>
    /// <param name="Gc">what the garbage collector did inside each timed round.</param>
    /// <param name="GraphPhases">CUDA-graph models: host ms per step by phase in each timed round (empty otherwise).</param>
    /// <param name="Windows">when each timed round ran (UTC), to line rounds up with a log of the card's clocks and temperature.</param>
    private sealed record BenchResult(string Path, int Context, int Batch, double MsPerStep, IReadOnlyList<double> RoundMs, IReadOnlyList<int> RoundPositions, double? Speedup,
        double TokensPerSecond, double PrefillTokensPerSecond, KvMemory Memory, bool CudaGraph, string? GraphTransfer, double? GraphMaxAbsDiff,
        bool LogitsOnDevice, IReadOnlyList<GcRound> Gc, IReadOnlyList<GraphPhases> GraphPhases, IReadOnlyList<RoundWindow> Windows);

    /// <summary>
    /// .NET's garbage collector inside one timed round: collections that reached each generation (a gen-2 collection
    /// counts in all three), time the process was paused for them, and bytes the timing thread allocated per step.
    /// </summary>
    private sealed record GcRound(int Gen0, int Gen1, int Gen2, double PauseMs, long AllocatedBytesPerStep);

    /// <summary>The wall-clock interval (UTC) of one timed round's steps.</summary>
    private sealed record RoundWindow(DateTime StartUtc, DateTime EndUtc);

    /// <summary>Host ms per CUDA-graph step in one timed round, by phase (MixAttentionSession.CudaGraphStepTime).</summary>
    private sealed record GraphPhases(double InputsMs, double ReplayMs, double LogitsMs);

    private static double Median(IEnumerable<double> values)
    {
        var v = values.Order().ToArray();
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }

    /// <summary>One model opened for a bench: its session, its sequences prefilled to the context, three warm-up steps
    /// done; <see cref="Time"/> decodes and times steps (the sequences grow by one token a step).</summary>
    private sealed class BenchSubject : IDisposable
    {
        private readonly BenchOptions _o;
        private readonly Microsoft.ML.OnnxRuntime.SessionOptions? _profiled;
        private readonly MixAttentionModel _model;
        private readonly IDecoderSession _session;
        private readonly List<int> _seqs = [];
        private readonly long[] _tokens;
        private readonly float[] _logits;
        private readonly MixAttentionSession? _onDevice;
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
                _onDevice = o.DeviceLogits ? _session as MixAttentionSession : null;
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
            var graphBefore = (_session as MixAttentionSession)?.CudaGraphStepTime;
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
            if ((_session as MixAttentionSession)?.CudaGraphStepTime is { } after)
            {
                var before = graphBefore ?? default;
                _graphPhases.Add(new GraphPhases((after.Inputs - before.Inputs).TotalMilliseconds / steps, (after.Replay - before.Replay).TotalMilliseconds / steps,
                    (after.Logits - before.Logits).TotalMilliseconds / steps));
            }
            return ms;
        }

        public BenchResult Result(IReadOnlyList<double> roundMs, double? speedup = null, IReadOnlyList<int>? positions = null)
        {
            double ms = Median(roundMs);
            return new BenchResult(Path, _o.Context, _o.Batch, ms, roundMs, positions ?? [], speedup, _o.Batch * 1000.0 / ms, _prefillTokensPerSecond, _session.Memory(),
                _cudaGraph, (_session as MixAttentionSession)?.CudaGraphTransfer, _graphMaxDiff, _onDevice is not null, _gc, _graphPhases, _windows);
        }

        public void Dispose()
        {
            if (_profiled is not null) Console.Error.WriteLine($"ORT profile of {Path}: {_model.Session.EndProfiling()}");
            _session.Dispose();
            _model.Dispose();
            _profiled?.Dispose();
        }
    }

    private static string? CudaGraphBlocker(string path)
    {
        var model = MixAttention.Onnx.Onnx.OnnxModel.Load(path); // the graph only: external weights stay on disk
        return MixAttentionSession.CudaGraphDecodeBlocker(MixAttention.Onnx.Lowering.CachePlan.FromModel(model.Proto));
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
            if (graph) Console.Error.WriteLine($"check-graph: transfer {(session as MixAttentionSession)?.CudaGraphTransfer}");
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
