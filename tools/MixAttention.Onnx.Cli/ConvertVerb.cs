using System.CommandLine;
using System.Text.Json;
using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Runtime;
using Spectre.Console;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Cli;

/// <summary><c>mixattn convert IN -o OUT --layout SPEC [--window N] [--backend ops|ort-gqa|reference] [--force] [--json]</c></summary>
internal static class ConvertVerb
{
    /// <summary>Positions per block of a paged cache when --paged is given without --block-size: the CPU kernel's key block (64), so a block is one online-softmax run.</summary>
    private const int DefaultBlockSize = 64;
    /// <summary>The same for the ort-gqa backend: ORT's PagedAttention takes pages of a multiple of 256 (its FlashAttention path).</summary>
    private const int DefaultOrtBlockSize = 256;

    public static Command Create()
    {
        var input = new Argument<string>("IN") { Description = "The exported decoder (.onnx, or a folder holding one). Never modified." };
        var output = new Option<string>("--output", "-o") { Description = "Where to write the converted model (its external data goes beside it).", Required = true };
        var layout = new Option<string>("--layout", "-l")
        {
            Description = "Layout: a preset (native, gemma3, cai, ma-pairs, ma, ma-offset, ma-offset-pairs), a compact string like 0_1s_1s_3s, or a JSON file.",
            DefaultValueFactory = _ => "native",
        };
        var window = new Option<int?>("--window", "-w") { Description = "Window for sliding layers the model does not define itself." };
        var backend = new Option<string>("--backend", "-b") { Description = "Lowering target: ops (our custom ops), ort-gqa (ORT GroupQueryAttention) or reference (plain ONNX).", DefaultValueFactory = _ => BackendName.Ops };
        backend.AcceptOnlyFromAmong([.. BackendName.All]);
        var force = new Option<bool>("--force") { Description = "Overwrite OUT if it exists." };
        var json = new Option<bool>("--json") { Description = "Print the report as JSON." };
        var copyWeights = new Option<bool>("--copy-weights") { Description = "Write a compact copy of the external weights instead of hard-linking the source's weights file." };
        var allowOutside = new Option<bool>("--allow-external-data-outside") { Description = "Trust external-data paths that leave the model's folder." };
        var check = new Option<string>("--check")
        {
            Description = "After writing: structure (re-read graph and cache plan, always done), load (also run one step in ONNX Runtime), " +
                "compare (also decode a short sequence with the source and compare logits), auto (the largest that fits in memory), or none. " +
                "A converted model that fails its check is removed and the command fails.",
            DefaultValueFactory = _ => "auto",
        };
        check.AcceptOnlyFromAmong("auto", "structure", "compare", "load", "none");
        var kvDType = new Option<string>("--kv-dtype")
        {
            Description = "Element type of the KV caches: auto (the model's), fp16 or bf16 (only the model's own type), fp8 (E4M3) or int8 (quantized, with scales). " +
                "A JSON layout may set \"kv_dtype\" per owner layer; readers use their owner's.",
            DefaultValueFactory = _ => "auto",
        };
        kvDType.AcceptOnlyFromAmong([.. KvDTypes.Names]);
        var kvScale = new Option<string>("--kv-scale")
        {
            HelpName = "calibrate|absmax:X|fixed:S",
            Description = "Scales of quantized caches: calibrate (absmax of K and V while the source model reads --calibrate), absmax:X (|K|, |V| <= X: scale X/qmax) or fixed:S. " +
                "scale = absmax / qmax, qmax 127 for int8 and 448 for fp8.",
            DefaultValueFactory = _ => "calibrate",
        };
        var granularity = new Option<string>("--kv-scale-granularity")
        {
            Description = "One scale per tensor, per KV head or per channel (head and channel of K and V separately).",
            DefaultValueFactory = _ => "channel",
        };
        granularity.AcceptOnlyFromAmong("tensor", "head", "channel");
        var calibrate = new Option<string?>("--calibrate")
        {
            HelpName = "TEXT|IDS|random:N",
            Description = $"Calibration tokens for --kv-scale calibrate: a text file (tokenized with the tokenizer beside the model or --tokenizer), token ids (a file or 1,2,3), or random:N. Default random:{CalibrationTokens.DefaultRandom}.",
        };
        var paged = new Option<bool>("--paged")
        {
            Description = "Page the global caches: each global cache becomes a pool of fixed-size blocks read through a block_table input, " +
                "so the runtime takes memory by each sequence's actual length (docs/runtime.md). Sliding rings stay per sequence. " +
                "With --backend ort-gqa (a full-attention layout, fp16/bf16) every layer becomes ORT's PagedAttention (CUDA only).",
        };
        var blockSize = new Option<int?>("--block-size") { HelpName = "N", Description = $"Positions per block of a paged cache (with --paged; default {DefaultBlockSize}, {DefaultOrtBlockSize} with --backend ort-gqa)." };
        var tokenizer = new Option<string?>("--tokenizer") { HelpName = "DIR", Description = "Folder with the tokenizer for a --calibrate text file (default: the model's folder)." };
        var cmd = new Command("convert", "Rewrite an exported decoder to a MixAttention layout (sliding windows, shared KV caches).\n\n" +
            "Examples:\n  mixattn convert graphs/mistral-torchscript/model.onnx -o out/mistral.onnx --layout native\n" +
            "  mixattn convert model.onnx -o mixed.onnx --layout cai --window 1024\n  mixattn convert model.onnx -o mixed.onnx --layout 0_1s_1s_3s_3s_3s --window 512 --backend reference")
        {
            input, output, layout, window, backend, force, json, copyWeights, allowOutside, check, kvDType, kvScale, granularity, calibrate, tokenizer,
            paged, blockSize,
        };
        cmd.SetAction(parse =>
        {
            if (parse.GetValue(blockSize) is { } bs && !parse.GetValue(paged))
                throw new MixAttentionException($"--block-size {bs} is for paged caches; add --paged.");
            var options = new ConversionOptions
            {
                KvDType = parse.GetValue(kvDType)!,
                KvScaleGranularity = Plan.KvScaleTensors.Parse(parse.GetValue(granularity))!.Value,
                Layout = parse.GetValue(layout)!,
                Window = parse.GetValue(window),
                Backend = parse.GetValue(backend)!,
                Force = parse.GetValue(force),
                LinkWeights = !parse.GetValue(copyWeights),
                Load = new OnnxLoadOptions { AllowExternalDataOutsideModelFolder = parse.GetValue(allowOutside) },
                PagedBlockSize = parse.GetValue(paged)
                    ? parse.GetValue(blockSize) ?? (parse.GetValue(backend) == BackendName.OrtGqa ? DefaultOrtBlockSize : DefaultBlockSize) : null,
            };
            // The scale flags only mean something for quantized caches: given without one, they are a mistake (most
            // likely a forgotten --kv-dtype), said as such before their value is even read (docs/cli.md).
            if (!AsksForQuantized(options))
            {
                string[] given = [.. new Option[] { kvScale, granularity, calibrate }.Where(o => parse.GetResult(o) is { Implicit: false }).Select(o => o.Name)];
                if (given.Length > 0)
                    throw new MixAttentionException($"{string.Join(", ", given)} {(given.Length == 1 ? "applies" : "apply")} to quantized caches only: " +
                        "add --kv-dtype int8 or fp8 (or \"kv_dtype\" in a JSON layout), or leave " + (given.Length == 1 ? "it" : "them") + " out.");
            }
            var rule = KvScaleRule.Parse(parse.GetValue(kvScale)!);
            options = options with { KvScale = rule.ToString() };
            if (parse.GetValue(calibrate) is not null && rule.Kind != KvScaleRule.Kinds.Calibrate)
                throw new MixAttentionException($"--calibrate is for --kv-scale calibrate; --kv-scale {rule} needs no calibration run.");
            if (rule.Kind == KvScaleRule.Kinds.Calibrate && AsksForQuantized(options))
            {
                // Calibrate before converting: the scales are part of the model, and nothing is written if this fails.
                var (tokens, description) = CalibrationTokens.Resolve(parse.GetValue(calibrate), parse.GetValue(input)!, parse.GetValue(tokenizer));
                if (!parse.GetValue(json) && !Console.IsOutputRedirected)
                    AnsiConsole.MarkupLine($"calibrating the KV scales on {Markup.Escape(description)} through the source model…");
                options = options with { Calibration = KvCalibrator.Run(parse.GetValue(input)!, tokens, description, options.Load.AllowExternalDataOutsideModelFolder) };
            }
            ConversionReport report;
            if (parse.GetValue(json) || Console.IsOutputRedirected)
                report = Converter.Convert(parse.GetValue(input)!, parse.GetValue(output)!, options);
            else
            {
                report = null!;
                AnsiConsole.Progress().AutoClear(true).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn()).Start(p =>
                {
                    var tasks = new Dictionary<Converter.Stage, ProgressTask>();
                    var progress = new SyncProgress<(Converter.Stage Stage, double Fraction)>(e =>
                    {
                        if (e.Stage == Converter.Stage.Done) return;
                        if (!tasks.TryGetValue(e.Stage, out var t))
                        {
                            foreach (var other in tasks.Values) other.Value = other.MaxValue;
                            tasks[e.Stage] = t = p.AddTask(e.Stage.ToString().ToLowerInvariant(), maxValue: 1.0);
                        }
                        t.Value = Math.Max(t.Value, e.Fraction);
                    });
                    report = Converter.Convert(parse.GetValue(input)!, parse.GetValue(output)!, options, progress);
                });
            }
            var checkReport = RunCheck(report, parse.GetValue(check)!);
            if (parse.GetValue(json))
            {
                var doc = report.ToJson();
                doc["exact"] = Exact(report, checkReport);
                doc["check"] = new System.Text.Json.Nodes.JsonObject
                {
                    ["done"] = checkReport.Done.ToString().ToLowerInvariant(),
                    ["why"] = checkReport.Why,
                    ["tokens"] = checkReport.Tokens,
                    ["max_abs_diff_vs_source"] = checkReport.MaxAbsDiff,
                    ["matches_source"] = checkReport.MatchesSource,
                };
                Console.WriteLine(doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            }
            else
                Render(report, checkReport);
            return ExitCodes.Ok;
        });
        return cmd;
    }

    /// <summary>
    /// True when the conversion may quantize a cache: --kv-dtype fp8/int8, or a JSON layout whose layers ask for one (read
    /// by the layout parser itself; a layout it cannot read counts as not quantized, and the converter then says why).
    /// </summary>
    private static bool AsksForQuantized(ConversionOptions o)
    {
        if (o.KvDType is "int8" or "fp8") return true;
        string text = o.Layout;
        if (!text.TrimStart().StartsWith('{'))
        {
            // A layout file, read as the layout parser reads it (a regular file of bounded size, never a FIFO); if that
            // fails, the converter reports why.
            try { text = File.Exists(o.Layout) ? SafeFiles.ReadAllText(o.Layout, "layout file", SafeFiles.MaxConfigBytes, followLink: true) : ""; }
            catch (Exception e) when (e is MixAttentionException or IOException or UnauthorizedAccessException) { return false; }
        }
        if (!text.TrimStart().StartsWith('{')) return false; // a preset or compact string: no per-layer cache types
        try { return Layouts.LayoutJson.Read(text).Layers.Any(l => l.KvDType is "int8" or "fp8"); }
        catch (Layouts.LayoutException) { return false; }
    }

    /// <summary>
    /// Loads and runs the written model (and compares it with the source where that fits); a model that does not run is
    /// removed, with the data files it records as its own, before the error propagates, so no broken output is left.
    /// </summary>
    internal static ConversionCheckReport RunCheck(ConversionReport report, string mode)
    {
        var source = report.Input;
        try
        {
            return ConversionCheck.Run(source, report.Output!, Enum.Parse<ConversionCheckMode>(mode, ignoreCase: true));
        }
        catch (InvalidOperationException e)
        {
            OnnxModel.DeleteWritten(report.Output!);
            throw new InvalidOperationException($"{e.Message}; the output was removed. This is a converter bug: please report it with the model.", e);
        }
    }

    /// <summary>
    /// Exact is claimed only when proven: the layout equals the model's own attention (no differences) and either the
    /// comparison with the source agreed, or there was no comparison to contradict it (it is then exact by construction).
    /// </summary>
    private static bool Exact(ConversionReport r, ConversionCheckReport c) =>
        r.Differences.Count == 0 && (c.MaxAbsDiff is null || c.MatchesSource);

    private static void Render(ConversionReport r, ConversionCheckReport check)
    {
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
        var table = new Table().Border(TableBorder.Simple).Title($"[bold]{Markup.Escape(Path.GetFileName(r.Output ?? ""))}[/]: layout {Markup.Escape(r.Layout.Name)}, backend {r.Plan.Backend}");
        table.AddColumn("layer").AddColumn("kind").AddColumn("window").AddColumn("reads KV of").AddColumn("cache");
        foreach (var l in r.Layout.Layers)
        {
            var entry = r.Plan.Caches.FirstOrDefault(c => c.Owner == l.Layer);
            table.AddRow(l.Layer.ToString(), l.IsSliding ? "sliding" : "global", l.IsSliding ? l.Window.ToString() : "-",
                l.IsOwner ? "itself" : $"layer {l.KvSource}",
                entry is null ? "-" : $"{(entry.IsSliding ? "ring" : "full")} {entry.DType} ({entry.Readers.Count} readers)");
        }
        AnsiConsole.Write(table);
        var summary = new Table().Border(TableBorder.Simple).AddColumn("").AddColumn(new TableColumn("before").RightAligned()).AddColumn(new TableColumn("after").RightAligned()).AddColumn(new TableColumn("ratio").RightAligned());
        summary.AddRow("attention layers", r.Layout.Count.ToString(), r.Layout.Count.ToString(), "");
        summary.AddRow("KV caches (owners)", r.SourceCaches.ToString(), r.Layout.Owners.Count.ToString(), "");
        foreach (var (context, before, after) in r.KvBytesPerSequence)
            summary.AddRow($"KV bytes / sequence @ {context / 1024}K", Cli.Bytes(before), Cli.Bytes(after), after == 0 ? "-" : $"{(double)before / after:0.0}×");
        summary.AddRow("parameters removed", "", r.Removed.Parameters.ToString("N0"), Cli.Bytes(r.Removed.InitializerBytes));
        AnsiConsole.Write(summary);
        int changed = r.Layout.Layers.Count(l => r.Differences.Any(d => d.StartsWith($"layer {l.Layer}:", StringComparison.Ordinal)));
        foreach (var d in r.Differences.Where(d => d.StartsWith("caches:", StringComparison.Ordinal)))
            AnsiConsole.MarkupLine($"[yellow]quantized:[/] {Markup.Escape(d["caches:".Length..].Trim())}");
        if (changed == 0 && r.Differences.Count > 0)
        {
            if (check.MaxAbsDiff is { } diff)
                AnsiConsole.MarkupLine($"every layer attends as in the source; with quantized caches the logits differ from the source's by up to {diff:0.###} over {check.Tokens} tokens.");
        }
        else if (r.Differences.Count > 0)
            AnsiConsole.MarkupLine($"[yellow]retrofit:[/] {changed} layer(s) attend differently from the source (fine-tune or verify quality).");
        else if (check.MaxAbsDiff is null)
            AnsiConsole.MarkupLine("[green]exact by construction:[/] every layer attends as in the source model (no comparison ran).");
        else if (check.MatchesSource)
            AnsiConsole.MarkupLine($"[green]exact:[/] every layer attends as in the source, and the logits match the source's over {check.Tokens} tokens (max |Δ| {check.MaxAbsDiff:0.0e0}).");
        else
            AnsiConsole.MarkupLine($"[red]warning:[/] the layout is the model's own, but the logits differ from the source's by up to {check.MaxAbsDiff:0.###} over {check.Tokens} tokens. " +
                "Exports traced with TorchScript often only work at their traced lengths (the converted model computes masks and windows itself); check it against your framework.");
        AnsiConsole.MarkupLine(check.Done switch
        {
            ConversionCheckMode.Compare => $"check: loaded and ran the converted model, compared with the source ({Markup.Escape(check.Why)}).",
            ConversionCheckMode.Load => $"check: loaded and ran the converted model ({Markup.Escape(check.Why)}).",
            ConversionCheckMode.Structure => $"check: graph and cache plan re-read ({Markup.Escape(check.Why)}).",
            _ => "check: none (--check none).",
        });
        AnsiConsole.MarkupLine($"wrote [bold]{Markup.Escape(r.Output ?? "")}[/] in {r.Elapsed.TotalSeconds:0.00} s");
    }

    /// <summary>Reports on the calling thread (Progress&lt;T&gt; posts to the thread pool, which races the live display).</summary>
    private sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
