using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using MixAttention.Onnx.Runtime.Tuning;
using Spectre.Console;

namespace MixAttention.Onnx.Cli;

/// <summary><c>mixattn eval SOURCE [CONVERTED...] --text FILE|--tokens FILE [--tokenizer DIR] [--context N] [--device cpu|cuda] [--json] [--plot FILE.svg]</c></summary>
internal static class EvalVerb
{
    public static Command Create()
    {
        var source = new Argument<string>("SOURCE") { Description = "The exported (unconverted) model: the reference." };
        var converted = new Argument<string[]>("CONVERTED") { Description = "Conversions of it (mixattn convert).", Arity = ArgumentArity.ZeroOrMore };
        var input = new TextInput();
        var run = new EvaluationFlags("");
        var buckets = new Option<int>("--buckets") { HelpName = "N", Description = "Position buckets of the report and plot.", DefaultValueFactory = _ => 8 };
        var json = new Option<bool>("--json") { Description = "Print the report as JSON." };
        var plot = new Option<string?>("--plot") { HelpName = "FILE.svg", Description = "Write mean KL vs the source over position as an SVG file." };
        var cmd = new Command("eval", "Score conversions against their source on your text: perplexity, KL, max |Δlogit|, top-1 agreement by position, KV bytes.\n\n" +
            "Examples:\n  mixattn eval model.onnx out/native.onnx out/cai.onnx --text wiki.txt --context 4096\n" +
            "  mixattn eval model.onnx mixed.onnx --tokens ids.txt --json --plot kl.svg")
        {
            source, converted,
        };
        foreach (var o in run.All) cmd.Options.Add(o);
        cmd.Options.Add(buckets);
        cmd.Options.Add(json);
        cmd.Options.Add(plot);
        foreach (var o in input.All) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            var src = parse.GetValue(source)!;
            var plotPath = parse.GetValue(plot);
            if (plotPath is not null && !plotPath.EndsWith(".svg", StringComparison.OrdinalIgnoreCase))
                throw new MixAttentionException($"--plot {plotPath}: only SVG plots are written; name the file *.svg.");
            if (plotPath is not null) OutputFile.CheckBeforeRun(plotPath, "--plot");
            var tokens = input.Read(parse, src);
            var options = run.Read(parse, parse.GetValue(buckets));
            var report = Progress.Run(!parse.GetValue(json), p => Evaluation.Run(src, parse.GetValue(converted) ?? [], tokens, options, p));
            if (plotPath is not null) WritePlot(plotPath, report);
            if (parse.GetValue(json)) Console.WriteLine(ToJson(report).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            else Render(report);
            return ExitCodes.Ok;
        });
        return cmd;
    }

    internal static JsonObject ToJson(ModelEvaluation m) => new()
    {
        ["model"] = m.Model,
        ["layout"] = m.Layout,
        ["perplexity"] = m.Perplexity,
        ["mean_kl"] = m.MeanKl,
        ["max_kl"] = m.MaxKl,
        ["max_abs_logit_diff"] = m.MaxLogitDelta,
        ["top1_agreement"] = m.Top1Agreement,
        ["kv_bytes_per_sequence"] = m.KvBytesPerSequence,
        ["by_position"] = new JsonArray(m.Buckets.Select(b => (JsonNode)new JsonObject
        {
            ["start"] = b.Start, ["end"] = b.End, ["count"] = b.Count, ["perplexity"] = b.Perplexity,
            ["mean_kl"] = b.MeanKl, ["max_kl"] = b.MaxKl, ["max_abs_logit_diff"] = b.MaxLogitDelta, ["top1_agreement"] = b.Top1Agreement,
        }).ToArray()),
    };

    private static JsonObject ToJson(EvaluationReport r) => new()
    {
        ["context"] = r.Context,
        ["sequences"] = r.Sequences,
        ["positions"] = r.Positions,
        ["models"] = new JsonArray(r.Models.Select(m => (JsonNode)ToJson(m)).ToArray()),
    };

    private static void Render(EvaluationReport r)
    {
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
        var table = new Table().Border(TableBorder.Simple).Title($"{r.Positions} positions in {r.Sequences} sequence(s) of up to {r.Context} tokens")
            .AddColumn("model").AddColumn("layout").AddColumn(new TableColumn("perplexity").RightAligned()).AddColumn(new TableColumn("mean KL").RightAligned())
            .AddColumn(new TableColumn("max KL").RightAligned()).AddColumn(new TableColumn("max |Δlogit|").RightAligned()).AddColumn(new TableColumn("top-1").RightAligned()).AddColumn(new TableColumn($"KV / sequence @ {r.Context}").RightAligned());
        for (int i = 0; i < r.Models.Count; i++)
        {
            var m = r.Models[i];
            table.AddRow(Markup.Escape(Path.GetFileName(Path.GetDirectoryName(m.Model)) + "/" + Path.GetFileName(m.Model)), Markup.Escape(i == 0 ? "(source)" : m.Layout ?? "-"),
                $"{m.Perplexity:0.###}", $"{m.MeanKl:0.###e+0}", $"{m.MaxKl:0.###e+0}", $"{m.MaxLogitDelta:0.###e+0}", $"{m.Top1Agreement:P1}", Cli.Bytes(m.KvBytesPerSequence));
        }
        AnsiConsole.Write(table);
        if (r.Models.Count < 2) return;
        var byPosition = new Table().Border(TableBorder.Simple).Title("mean KL vs the source by position").AddColumn("positions");
        for (int i = 1; i < r.Models.Count; i++) byPosition.AddColumn(new TableColumn($"#{i}").RightAligned());
        foreach (var (b, index) in r.Models[0].Buckets.Select((b, index) => (b, index)))
            byPosition.AddRow(new[] { $"{b.Start}-{b.End - 1}" }.Concat(r.Models.Skip(1).Select(m => index < m.Buckets.Count ? $"{m.Buckets[index].MeanKl:0.###e+0} ({m.Buckets[index].Top1Agreement:P0})" : "-")).ToArray());
        AnsiConsole.Write(byPosition);
    }

    /// <summary>One polyline of mean KL per converted model over position (bucket middles), written whole or not at all.</summary>
    private static void WritePlot(string path, EvaluationReport r)
    {
        const int width = 640, height = 360, left = 70, right = 20, top = 20, bottom = 50;
        var models = r.Models.Skip(1).ToList();
        double maxKl = Math.Max(1e-12, models.SelectMany(m => m.Buckets).Select(b => b.MeanKl).DefaultIfEmpty(0).Max());
        string F(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);
        double X(double position) => left + (width - left - right) * position / Math.Max(1, r.Context - 1);
        double Y(double kl) => height - bottom - (height - top - bottom) * kl / maxKl;
        string[] colours = { "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f" };
        var svg = new StringBuilder();
        svg.AppendLine($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">");
        svg.AppendLine($"<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>");
        svg.AppendLine($"<line x1=\"{left}\" y1=\"{height - bottom}\" x2=\"{width - right}\" y2=\"{height - bottom}\" stroke=\"black\"/>");
        svg.AppendLine($"<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{height - bottom}\" stroke=\"black\"/>");
        svg.AppendLine($"<text x=\"{(width + left) / 2}\" y=\"{height - 10}\" text-anchor=\"middle\">position in sequence (of {r.Context} tokens)</text>");
        svg.AppendLine($"<text x=\"{left - 5}\" y=\"{top + 4}\" text-anchor=\"end\">{maxKl.ToString("0.##e0", CultureInfo.InvariantCulture)}</text>");
        svg.AppendLine($"<text x=\"{left - 5}\" y=\"{height - bottom + 4}\" text-anchor=\"end\">0</text>");
        svg.AppendLine($"<text x=\"15\" y=\"{(height - bottom + top) / 2}\" transform=\"rotate(-90 15 {(height - bottom + top) / 2})\" text-anchor=\"middle\">mean KL vs source</text>");
        svg.AppendLine($"<text x=\"{width - right}\" y=\"{height - bottom + 16}\" text-anchor=\"end\">{r.Context - 1}</text>");
        for (int i = 0; i < models.Count; i++)
        {
            var m = models[i];
            string colour = colours[i % colours.Length];
            var points = string.Join(' ', m.Buckets.Select(b => $"{F(X((b.Start + b.End - 1) / 2.0))},{F(Y(b.MeanKl))}"));
            svg.AppendLine($"<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{points}\"/>");
            string label = System.Security.SecurityElement.Escape(Path.GetFileName(m.Model) + (m.Layout is null ? "" : $" ({m.Layout})"));
            svg.AppendLine($"<text x=\"{left + 10}\" y=\"{top + 14 * (i + 1)}\" fill=\"{colour}\">{label}</text>");
        }
        svg.AppendLine("</svg>");
        OutputFile.WriteWhole(path, svg.ToString());
    }
}
