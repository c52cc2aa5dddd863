using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using MixAttention.Onnx.Runtime;
using Spectre.Console;

namespace MixAttention.Onnx.Cli;

/// <summary><c>mixattn verify ORIGINAL CONVERTED [--steps N] [--prompt-len N] [--prefill-chunk N] [--batch N] [--seed S] [--device cpu|cuda] [--cuda-graph] [--expect-exact] [--json]</c></summary>
internal static class VerifyVerb
{
    public static Command Create()
    {
        var original = new Argument<string>("ORIGINAL") { Description = "The exported (unconverted) model." };
        var converted = new Argument<string>("CONVERTED") { Description = "Its conversion (mixattn convert)." };
        var steps = new Option<int?>("--steps") { Description = "Decode steps (default: max(3 × the largest window, 32))." };
        var promptLen = new Option<int>("--prompt-len") { Description = "Prompt tokens.", DefaultValueFactory = _ => 8 };
        var batch = new Option<int>("--batch") { Description = "Sequences decoded together.", DefaultValueFactory = _ => 2 };
        var seed = new Option<int>("--seed") { Description = "Seed of the random tokens.", DefaultValueFactory = _ => 1234 };
        var tolerance = new Option<float>("--tolerance") { Description = "Max |Δlogit| allowed by --expect-exact.", DefaultValueFactory = _ => 1e-3f };
        var expectExact = new Option<bool>("--expect-exact") { Description = "Exit 1 unless every step is within the tolerance and every argmax agrees." };
        var chunk = new Option<int>("--prefill-chunk") { Description = "Prefill call length.", DefaultValueFactory = _ => 16 };
        var device = new Option<string>("--device") { Description = "cpu or cuda (both models).", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var cudaGraph = new Option<bool>("--cuda-graph") { Description = "Decode the converted model as CUDA graph replays (ModelOptions.CudaGraphDecode; --device cuda, ops backend)." };
        var json = new Option<bool>("--json") { Description = "Print the report as JSON." };
        var cmd = new Command("verify", "Run a model and its conversion on the same random tokens and compare the logits of every step.\n\n" +
            "Examples:\n  mixattn verify graphs/mistral-torchscript/model.onnx out/mistral.onnx --expect-exact\n  mixattn verify model.onnx mixed.onnx --steps 200 --batch 4 --json")
        {
            original, converted, steps, promptLen, chunk, batch, seed, device, cudaGraph, tolerance, expectExact, json,
        };
        cmd.SetAction(parse =>
        {
            var models = new ModelOptions { Device = parse.GetValue(device) == "cuda" ? ExecutionDevice.Cuda : ExecutionDevice.Cpu };
            if (parse.GetValue(cudaGraph) && models.Device != ExecutionDevice.Cuda) throw new MixAttentionException("--cuda-graph needs --device cuda.");
            var report = ModelComparison.Verify(parse.GetValue(original)!, parse.GetValue(converted)!, new VerifyOptions
            {
                Steps = parse.GetValue(steps),
                PromptLength = parse.GetValue(promptLen),
                PrefillChunk = parse.GetValue(chunk),
                Model = models,
                ConvertedModel = parse.GetValue(cudaGraph) ? models with { CudaGraphDecode = true } : null,
                Batch = parse.GetValue(batch),
                Seed = parse.GetValue(seed),
                Tolerance = parse.GetValue(tolerance),
            });
            if (parse.GetValue(json)) Console.WriteLine(ToJson(report).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            else Render(report);
            return parse.GetValue(expectExact) && !report.Exact ? ExitCodes.Failed : ExitCodes.Ok;
        });
        return cmd;
    }

    private static JsonObject ToJson(VerifyReport r) => new()
    {
        ["exact"] = r.Exact,
        ["tolerance"] = r.Tolerance,
        ["max_abs_diff"] = r.MaxAbsDiff,
        ["max_kl"] = r.MaxKl,
        ["top1_agreement"] = r.Top1Agreement,
        ["window"] = r.Window,
        ["kv_memory"] = new JsonObject { ["original"] = Memory(r.Original), ["converted"] = Memory(r.Converted) },
        ["steps"] = new JsonArray(r.Steps.Select(s => (JsonNode)new JsonObject
        {
            ["step"] = s.Step, ["position"] = s.Position, ["max_abs_diff"] = s.MaxAbsDiff, ["kl"] = s.KlDivergence, ["top1_agreement"] = s.Top1Agreement,
        }).ToArray()),
    };

    internal static JsonObject Memory(SessionKvMemory m) => new()
    {
        ["allocated_bytes"] = m.AllocatedBytes,
        ["bytes_per_sequence"] = m.BytesPerSequence,
        ["unconverted_bytes_per_sequence"] = m.UnconvertedBytesPerSequence,
        ["max_length"] = m.MaxLength,
    };

    private static void Render(VerifyReport r)
    {
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
        var table = new Table().Border(TableBorder.Simple).AddColumn("step").AddColumn("pos").AddColumn("max |Δlogit|").AddColumn("KL").AddColumn("top-1");
        foreach (var s in r.Steps)
            table.AddRow($"{s.Step}", $"{s.Position}", $"{s.MaxAbsDiff:0.###e+0}", $"{s.KlDivergence:0.###e+0}", $"{s.Top1Agreement:P0}");
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine($"max |Δlogit| {r.MaxAbsDiff:0.###e+0}, max KL {r.MaxKl:0.###e+0}, top-1 agreement {r.Top1Agreement:P1} over {r.Steps.Count} positions (largest window {r.Window})");
        AnsiConsole.MarkupLine($"KV memory per sequence of {r.Converted.MaxLength} tokens: original {Cli.Bytes(r.Original.BytesPerSequence)}, converted {Cli.Bytes(r.Converted.BytesPerSequence)} (allocated now {Cli.Bytes(r.Original.AllocatedBytes)} vs {Cli.Bytes(r.Converted.AllocatedBytes)})");
        AnsiConsole.MarkupLine(r.Exact ? $"[green]exact[/] (tolerance {r.Tolerance:0.#e+0})" : $"[yellow]diverges[/] (tolerance {r.Tolerance:0.#e+0})");
    }
}
