using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using MixAttention.Onnx.Runtime.Tuning;
using Spectre.Console;

namespace MixAttention.Onnx.Cli;

/// <summary><c>mixattn tune SOURCE --text FILE|--tokens FILE --budget BYTES|RATIO [--window W ...] [--max-kl X] [-o layout.json]</c></summary>
internal static class TuneVerb
{
    public static Command Create()
    {
        var source = new Argument<string>("SOURCE") { Description = "The exported (unconverted) model." };
        var input = new TextInput();
        var budget = new Option<string>("--budget") { HelpName = "BYTES|RATIO", Description = "KV bytes per sequence at the context (e.g. 1048576, 512KiB, 2GiB) or a ratio of the unconverted model's (e.g. 0.25 or 25%).", Required = true };
        var windows = new Option<int[]>("--window", "-w") { HelpName = "W", Description = "Windows sliding layers may take (repeat for several; default: the model's own).", AllowMultipleArgumentsPerToken = true };
        var maxKl = new Option<double?>("--max-kl") { HelpName = "X", Description = "Largest mean KL vs the source the chosen layout may have; above it nothing is written and the exit code is 1." };
        var output = new Option<string?>("--output", "-o") { HelpName = "FILE", Description = "Write the chosen layout as a JSON layout file (convert --layout FILE)." };
        var force = new Option<bool>("--force") { Description = "Overwrite the -o file if it exists." };
        var run = new EvaluationFlags("; the budget is at this context");
        var beam = new Option<int>("--beam") { HelpName = "N", Description = "Search states kept per step.", DefaultValueFactory = _ => 4 };
        var finalists = new Option<int>("--finalists") { HelpName = "N", Description = "Layouts within the budget confirmed end to end.", DefaultValueFactory = _ => 3 };
        var shareDistance = new Option<int>("--share-distance") { HelpName = "N", Description = "A layer may read the cache of at most this many layers back.", DefaultValueFactory = _ => 4 };
        var json = new Option<bool>("--json") { Description = "Print the result as JSON." };
        var cmd = new Command("tune", "Search for the layout that fits a KV budget at the least KL vs the source on your text (training-free).\n\n" +
            "Examples:\n  mixattn tune model.onnx --text wiki.txt --budget 0.25 --window 512 --window 1024 -o tuned.json\n" +
            "  mixattn convert model.onnx -o tuned/model.onnx --layout tuned.json")
        {
            source, budget, windows, maxKl, output, force,
        };
        foreach (var o in run.All) cmd.Options.Add(o);
        foreach (var o in new Option[] { beam, finalists, shareDistance, json }) cmd.Options.Add(o);
        foreach (var o in input.All) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            var src = parse.GetValue(source)!;
            var (bytes, ratio) = ParseBudget(parse.GetValue(budget)!);
            var outPath = parse.GetValue(output);
            if (outPath is not null && File.Exists(outPath) && !parse.GetValue(force))
                throw new MixAttentionException($"'{outPath}' already exists; pass --force to overwrite it.");
            if (outPath is not null) OutputFile.CheckBeforeRun(outPath, "--output");
            var tokens = input.Read(parse, src);
            var options = new LayoutSearchOptions
            {
                BudgetBytes = bytes,
                BudgetRatio = ratio,
                Windows = parse.GetValue(windows) is { Length: > 0 } w ? w : null,
                MaxKl = parse.GetValue(maxKl),
                BeamWidth = parse.GetValue(beam),
                Finalists = parse.GetValue(finalists),
                MaxShareDistance = parse.GetValue(shareDistance),
                Evaluation = run.Read(parse),
            };
            var result = Progress.Run(!parse.GetValue(json), p => LayoutSearch.Run(src, tokens, options, p));
            if (result.MeetsMaxKl && outPath is not null) OutputFile.WriteWhole(outPath, result.Chosen.Layout.ToJson());
            if (parse.GetValue(json)) Console.WriteLine(ToJson(result, outPath).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            else Render(result, result.MeetsMaxKl ? outPath : null, options.MaxKl);
            return result.MeetsMaxKl ? ExitCodes.Ok : ExitCodes.Failed;
        });
        return cmd;
    }

    /// <summary>"0.25" or "25%" is a ratio; an integer with an optional KiB/MiB/GiB/KB/MB/GB suffix is bytes.</summary>
    internal static (long? Bytes, double? Ratio) ParseBudget(string text)
    {
        var t = text.Trim();
        if (t.EndsWith('%') && double.TryParse(t[..^1], NumberStyles.Float, CultureInfo.InvariantCulture, out var percent))
            return (null, percent / 100);
        (string Suffix, long Scale)[] units = { ("KiB", 1L << 10), ("MiB", 1L << 20), ("GiB", 1L << 30), ("KB", 1000), ("MB", 1000_000), ("GB", 1000_000_000), ("B", 1) };
        foreach (var (suffix, scale) in units)
            if (t.EndsWith(suffix, StringComparison.OrdinalIgnoreCase) && double.TryParse(t[..^suffix.Length], NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v >= 1 && v * scale < long.MaxValue)
                return ((long)(v * scale), null);
        if (long.TryParse(t, NumberStyles.Integer, CultureInfo.InvariantCulture, out var b) && b > 1) return (b, null);
        if (double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out var r) && r > 0 && r <= 1) return (null, r);
        throw new MixAttentionException($"--budget '{text}' is neither a byte count (e.g. 1048576 or 512MiB) nor a ratio in (0, 1] (e.g. 0.25 or 25%).");
    }

    private static JsonObject Candidate(LayoutCandidate c) => new()
    {
        ["layout"] = c.Layout.ToCompactString(withWindows: true),
        ["role"] = c.Role,
        ["kv_bytes_per_sequence"] = c.KvBytesPerSequence,
        ["estimated_kl"] = double.IsNaN(c.EstimatedKl) ? null : c.EstimatedKl,
        ["quality"] = EvalVerb.ToJson(c.Quality),
    };

    private static JsonObject ToJson(LayoutSearchResult r, string? output) => new()
    {
        ["chosen"] = Candidate(r.Chosen),
        ["meets_max_kl"] = r.MeetsMaxKl,
        ["written"] = r.MeetsMaxKl ? output : null,
        ["budget_bytes"] = r.BudgetBytes,
        ["unconverted_bytes"] = r.UnconvertedBytes,
        ["context"] = r.Context,
        ["evaluations"] = r.Evaluated.Count,
        ["elapsed_s"] = r.Elapsed.TotalSeconds,
        ["pareto"] = new JsonArray(r.Pareto.Select(c => (JsonNode)Candidate(c)).ToArray()),
    };

    private static void Render(LayoutSearchResult r, string? written, double? maxKl)
    {
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
        var table = new Table().Border(TableBorder.Simple).Title($"Pareto front of the {r.Evaluated.Count} layouts run over the text ({r.Context} tokens per sequence)")
            .AddColumn("layout").AddColumn("role").AddColumn(new TableColumn("KV / sequence").RightAligned()).AddColumn(new TableColumn("vs unconverted").RightAligned())
            .AddColumn(new TableColumn("mean KL").RightAligned()).AddColumn(new TableColumn("top-1").RightAligned()).AddColumn("budget");
        foreach (var c in r.Pareto)
            table.AddRow(Markup.Escape(c.Layout.ToCompactString(withWindows: true)) + (c.Layout.HasSameAssignments(r.Chosen.Layout) ? " [green]◀ chosen[/]" : ""), c.Role,
                Cli.Bytes(c.KvBytesPerSequence), $"{(double)c.KvBytesPerSequence / r.UnconvertedBytes:P1}", $"{c.Quality.MeanKl:0.###e+0}", $"{c.Quality.Top1Agreement:P1}",
                c.KvBytesPerSequence <= r.BudgetBytes ? "fits" : "over");
        AnsiConsole.Write(table);
        var c0 = r.Chosen;
        AnsiConsole.MarkupLine($"chosen: [bold]{Markup.Escape(c0.Layout.ToCompactString(withWindows: true))}[/], {Cli.Bytes(c0.KvBytesPerSequence)} KV per sequence of {r.Context} tokens " +
            $"(budget {Cli.Bytes(r.BudgetBytes)}, unconverted {Cli.Bytes(r.UnconvertedBytes)}), mean KL {c0.Quality.MeanKl:0.###e+0}, top-1 {c0.Quality.Top1Agreement:P1}, " +
            $"perplexity {c0.Quality.Perplexity:0.###}; {r.Evaluated.Count} layouts in {r.Elapsed.TotalSeconds:0.0} s");
        if (!r.MeetsMaxKl)
            AnsiConsole.MarkupLine($"[red]over the KL limit:[/] mean KL {c0.Quality.MeanKl:0.###e+0} > --max-kl {maxKl}; nothing written. Raise the budget or allow other windows.");
        else if (written is not null)
            AnsiConsole.MarkupLine($"wrote [bold]{Markup.Escape(written)}[/]: mixattn convert SOURCE -o OUT --layout {Markup.Escape(written)}");
    }
}
