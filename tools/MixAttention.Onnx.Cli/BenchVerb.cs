using System.CommandLine;
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
        var rounds = new Option<int>("--rounds") { Description = "Timed rounds. 1: each model is opened, prefilled, timed and closed in turn. N > 1: every model is opened and prefilled first, then the models take turns, --steps steps each, N times, so a drift during the run, or an effect of the model timed just before, hits each model alike; ms / step is then the median over rounds and each speedup the median of the per-round ratios. Needs every model's caches in memory at once.", DefaultValueFactory = _ => 1 };
        var rotate = new Option<bool>("--rotate-order") { Description = "With --rounds: round r starts with model r mod (models) and goes on in the given order, so every model is timed in every position equally often. The JSON's decode_ms_per_step_rounds stay in round order." };
        var chunk = new Option<int>("--prefill-chunk") { Description = "Prefill call length (the prefill tokens/s column times these calls; shared sliding rings hold W + chunk - 1 rows).", DefaultValueFactory = _ => 256 };
        var device = new Option<string>("--device") { Description = "cpu or cuda.", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var budget = new Option<double>("--budget-gib") { Description = "KV memory budget for the 'sequences that fit' column.", DefaultValueFactory = _ => 16 };
        var json = new Option<bool>("--json") { Description = "Print the results as JSON." };
        var profile = new Option<string?>("--ort-profile") { Description = "Write ONNX Runtime's profile of each model's runs to files starting with this prefix (paths on stderr); see tools/gpu/e2e/profile_summary.py." };
        var cudaGraph = new Option<bool>("--cuda-graph") { Description = "Decode steps as CUDA graph replays (ModelOptions.CudaGraphDecode; --device cuda) for the models that allow it (ops-backend conversions); the others run without, in the same run (the JSON's cuda_graph says which)." };
        var checkGraph = new Option<int>("--check-graph") { Description = "With --cuda-graph: also decode N steps of the same prompts and tokens without CUDA graphs and print the largest |logit difference|.", DefaultValueFactory = _ => 0 };
        var deviceLogits = new Option<bool>("--device-logits") { Description = "Timed steps leave the logits in the model's memory (InPlaceCacheSession.DecodeOnDevice) instead of copying them to the host; models without it copy (the JSON's logits says which)." };
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
                    ["kv_bytes_allocated_by_dtype"] = new JsonObject(r.Memory.AllocatedBytesByDType.Select(p => KeyValuePair.Create(p.Key, (JsonNode?)JsonValue.Create(p.Value)))),
                    ["sequences_in_budget"] = r.Memory.BytesPerSequence == 0 ? 0 : budgetBytes / r.Memory.BytesPerSequence,
                    ["logits"] = r.LogitsOnDevice ? "device" : "host",
                    ["cuda_graph"] = r.CudaGraph, ["graph_transfer"] = r.GraphTransfer, ["graph_max_abs_diff"] = r.GraphMaxAbsDiff is { } g && double.IsNaN(g) ? "NaN" : r.GraphMaxAbsDiff,
                }).ToArray());
                Console.WriteLine(new JsonObject { ["device"] = parse.GetValue(device), ["cuda_graph"] = parse.GetValue(cudaGraph), ["budget_bytes"] = budgetBytes, ["results"] = arr }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
                return ExitCodes.Ok;
            }
            if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
            var table = new Table().Border(TableBorder.Simple).Title($"decode at context {parse.GetValue(context)}, batch {parse.GetValue(batch)}, {parse.GetValue(device)}{(parse.GetValue(cudaGraph) ? ", CUDA graphs" : "")}{(nRounds > 1 ? $", median of {nRounds} interleaved rounds{(parse.GetValue(rotate) ? " (rotating order)" : "")}" : "")}");
            foreach (var h in new[] { "model", "ms / step", "tokens/s", "vs first", "prefill tokens/s", "KV / sequence", "KV dtype", $"sequences in {parse.GetValue(budget)} GiB" })
                table.AddColumn(h);
            foreach (var r in results)
                table.AddRow(Markup.Escape(r.Path), $"{r.MsPerStep:0.000}", $"{r.TokensPerSecond:0}", $"{r.Speedup ?? r.TokensPerSecond / results[0].TokensPerSecond:0.00}×", $"{r.PrefillTokensPerSecond:0}",
                    Cli.Bytes(r.Memory.BytesPerSequence), r.Memory.AllocatedBytesByDType.Count == 0 ? "-" : string.Join(" + ", r.Memory.AllocatedBytesByDType.Keys),
                    r.Memory.BytesPerSequence == 0 ? "-" : (budgetBytes / r.Memory.BytesPerSequence).ToString("N0"));
            AnsiConsole.Write(table);
            return ExitCodes.Ok;
        });
        return cmd;
    }

    internal static double Median(IEnumerable<double> values)
    {
        var v = values.Order().ToArray();
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }

}
