using System.CommandLine;
using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Runtime;
using Spectre.Console;

namespace MixAttention.Onnx.Cli;

/// <summary><c>mixattn demo</c>: convert the shipped GPT-2 sample, generate with the original and the conversions side by side.</summary>
internal static class DemoVerb
{
    public static Command Create()
    {
        var graphs = new Option<string?>("--graphs") { Description = "The repository's graphs/ folder (default: found above the current folder or the tool)." };
        var layout = new Option<string>("--layout") { Description = "MixAttention layout to show next to the exact native conversion.", DefaultValueFactory = _ => "cai" };
        var window = new Option<int>("--window") { Description = "Window of the sliding layers.", DefaultValueFactory = _ => 8 };
        var prompt = new Option<string>("--prompt") { DefaultValueFactory = _ => "Once upon a time, in a land far away," };
        var maxNew = new Option<int>("--max-new") { DefaultValueFactory = _ => 48 };
        var json = new Option<bool>("--json") { Description = "Print the results as JSON instead of a table." };
        var cmd = new Command("demo", "Convert the GPT-2 sample model in graphs/ (native layout and a MixAttention layout), generate with the original and both " +
            "conversions from the same prompt, and print the texts, agreement, KV memory and speed.")
        {
            graphs, layout, window, prompt, maxNew, json,
        };
        cmd.SetAction(parse =>
        {
            var dir = parse.GetValue(graphs) ?? FindGraphs() ?? throw new MixAttentionException("cannot find graphs/gpt2-ortattention above the current folder; pass --graphs.");
            var original = Path.Combine(dir, "gpt2-ortattention", "model.onnx");
            var tokDir = Path.Combine(dir, "demo");
            if (!File.Exists(original)) throw new MixAttentionException($"{original} not found.");
            var work = Path.Combine(Path.GetTempPath(), "mixattn-demo-" + Guid.NewGuid().ToString("N")[..8]);
            Directory.CreateDirectory(work);
            try
            {
                var variants = new List<(string Name, string Path)> { ("original", original) };
                foreach (var (name, spec, w) in new[] { ("native", "native", (int?)null), (parse.GetValue(layout)!, parse.GetValue(layout)!, (int?)parse.GetValue(window)) })
                {
                    var output = Path.Combine(work, name, "model.onnx");
                    Directory.CreateDirectory(Path.GetDirectoryName(output)!);
                    Converter.Convert(original, output, new ConversionOptions { Layout = spec, Window = w });
                    variants.Add(($"{name}{(w is { } ww ? $" (window {ww})" : "")}", output));
                }
                using var tok = OrtExtensionsTokenizer.FromDirectory(tokDir);
                var text = parse.GetValue(prompt)!;
                var ids = tok.Encode(text);
                // Greedy with a repetition penalty: deterministic, and less repetitive than plain argmax on random weights.
                var options = new GenerationOptions { MaxNewTokens = parse.GetValue(maxNew), StopTokens = tok.StopTokens, RepetitionPenalty = 1.3f };
                var config = new SessionConfig { MaxLength = 256, PrefillChunk = 16 };
                if (parse.GetValue(json))
                {
                    var rows = new System.Text.Json.Nodes.JsonArray();
                    foreach (var (name, path) in variants.Skip(1))
                    {
                        var cmp = ModelComparison.Generate(original, path, ids, options, config);
                        if (rows.Count == 0)
                            rows.Add((System.Text.Json.Nodes.JsonNode)new System.Text.Json.Nodes.JsonObject { ["model"] = "original", ["text"] = tok.Decode(cmp.Original), ["kv_bytes_per_sequence"] = cmp.OriginalMemory.BytesPerSequence, ["tokens_per_second"] = cmp.OriginalStats.TokensPerSecond });
                        rows.Add((System.Text.Json.Nodes.JsonNode)new System.Text.Json.Nodes.JsonObject
                        {
                            ["model"] = name, ["text"] = tok.Decode(cmp.Converted), ["identical"] = cmp.Identical, ["common_prefix"] = cmp.CommonPrefix,
                            ["kv_bytes_per_sequence"] = cmp.ConvertedMemory.BytesPerSequence, ["tokens_per_second"] = cmp.ConvertedStats.TokensPerSecond,
                        });
                    }
                    Console.WriteLine(new System.Text.Json.Nodes.JsonObject { ["prompt"] = text, ["prompt_tokens"] = ids.Length, ["results"] = rows }
                        .ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
                    return ExitCodes.Ok;
                }
                if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
                AnsiConsole.MarkupLine($"[bold]prompt[/] ({ids.Length} tokens): {Markup.Escape(text)}");
                var table = new Table().Border(TableBorder.Simple).AddColumn("model").AddColumn("generated text").AddColumn("same tokens as original")
                    .AddColumn("KV / sequence (256 tok)").AddColumn("tokens/s");
                foreach (var (name, path) in variants.Skip(1))
                {
                    var cmp = ModelComparison.Generate(original, path, ids, options, config);
                    if (table.Rows.Count == 0)
                        table.AddRow("original", Markup.Escape(tok.Decode(cmp.Original)), "-", Cli.Bytes(cmp.OriginalMemory.BytesPerSequence), $"{cmp.OriginalStats.TokensPerSecond:0}");
                    table.AddRow(Markup.Escape(name), Markup.Escape(tok.Decode(cmp.Converted)),
                        cmp.Identical ? "[green]all[/]" : $"[yellow]first {cmp.CommonPrefix} of {cmp.Original.Count}[/]",
                        cmp.ConvertedMemory.BytesPerSequence < cmp.OriginalMemory.BytesPerSequence ? $"{Cli.Bytes(cmp.ConvertedMemory.BytesPerSequence)} ({(double)cmp.OriginalMemory.BytesPerSequence / cmp.ConvertedMemory.BytesPerSequence:0.#}× less)" : Cli.Bytes(cmp.ConvertedMemory.BytesPerSequence), $"{cmp.ConvertedStats.TokensPerSecond:0}");
                }
                AnsiConsole.Write(table);
                AnsiConsole.MarkupLine("The native conversion keeps the model's own attention (exact); the MixAttention layout shares KV caches and slides windows, " +
                    "so a model not trained for it (this one has random weights) drifts — verify with [bold]mixattn verify[/].");
                return ExitCodes.Ok;
            }
            finally
            {
                try { Directory.Delete(work, recursive: true); } catch (IOException) { }
            }
        });
        return cmd;
    }

    private static string? FindGraphs()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "graphs", "gpt2-ortattention", "model.onnx"))) return Path.Combine(d.FullName, "graphs");
        return null;
    }
}
