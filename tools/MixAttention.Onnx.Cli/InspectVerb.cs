using System.CommandLine;
using System.Text.Json;
using MixAttention.Onnx.Inspection;
using Spectre.Console;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Cli;

/// <summary><c>mixattn inspect MODEL [--context N] [--batch N] [--json]</c></summary>
internal static class InspectVerb
{
    public static Command Create()
    {
        var model = new Argument<string>("MODEL") { Description = "The .onnx model file (or a folder holding one)." };
        var context = new Option<int>("--context") { Description = "Context length for the KV cache size.", DefaultValueFactory = _ => 4096 };
        var batch = new Option<int>("--batch") { Description = "Batch size for the KV cache size.", DefaultValueFactory = _ => 1 };
        var json = new Option<bool>("--json") { Description = "Print a machine-readable JSON document instead of a table." };
        var cmd = new Command("inspect", "List every attention layer the model has (style, heads, window, cache tensors) and its KV cache size.\n\nExample: mixattn inspect graphs/llama-torchscript/model.onnx --context 32768 --batch 8")
        {
            model, context, batch, json,
        };
        cmd.SetAction(parse =>
        {
            var result = ModelInspection.Run(parse.GetValue(model)!, parse.GetValue(context), parse.GetValue(batch));
            if (parse.GetValue(json))
                Console.WriteLine(result.ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            else
                Render(result);
            return result.LayerCount == 0 ? ExitCodes.UserError : ExitCodes.Ok;
        });
        return cmd;
    }

    /// <summary>Short, stable style names (also used in docs).</summary>
    public static string StyleName(Detection.ExportStyle style) => style switch
    {
        Detection.ExportStyle.Decomposed => "decomposed",
        Detection.ExportStyle.OnnxAttention => "onnx-attention",
        Detection.ExportStyle.OrtAttention => "ort-attention",
        Detection.ExportStyle.OrtMultiHeadAttention => "ort-mha",
        Detection.ExportStyle.GroupQueryAttention => BackendName.OrtGqa,
        _ => style.ToString(),
    };

    private static void RenderConverted(ModelInspection r, Plan.CachePlan plan)
    {
        var table = new Table().Border(TableBorder.Simple)
            .Title($"[bold]{Markup.Escape(Path.GetFileName(r.ModelPath))}[/]: converted, layout {Markup.Escape(plan.LayoutName)} ({Markup.Escape(plan.Layout)}), backend {Markup.Escape(plan.Backend)}");
        foreach (var h in new[] { "layer", "kind", "window", "reads KV of", "cache", "capacity", "kv heads", "head size", "dtype", "readers", $"KV @ {r.Context}×{r.Batch}" })
            table.AddColumn(h);
        for (int l = 0; l < plan.LayerCount; l++)
        {
            var entry = plan.Caches.FirstOrDefault(c => c.Owner == l);
            table.AddRow(l.ToString(), plan.Windows[l] > 0 ? "sliding" : "global", plan.Windows[l] > 0 ? plan.Windows[l].ToString() : "-",
                plan.KvSource[l] == l ? "itself" : $"layer {plan.KvSource[l]}",
                entry is null ? "-" : Markup.Escape(entry.PastKey), entry is null ? "-" : entry.IsSliding ? $"ring of {entry.Window}{(entry.Readers.Count > 0 ? " + chunk" : "")}" : "max length",
                entry?.KvNumHeads.ToString() ?? "-", entry?.HeadSize.ToString() ?? "-", entry is null ? "-" : entry.Scales is { } sc ? $"{entry.DType} (scales per {Plan.KvScaleTensors.Name(sc.Granularity)})" : entry.DType,
                entry is null ? "-" : entry.Readers.Count == 0 ? "none" : string.Join(",", entry.Readers),
                entry is null ? "-" : Cli.Bytes(ModelInspection.PlanCacheBytes(entry, r.Context, r.Batch)));
        }
        AnsiConsole.Write(table);
        var byType = r.KvBytesByDType.Count > 1 || plan.Caches.Any(c => c.IsQuantized)
            ? " (" + string.Join(", ", r.KvBytesByDType.Select(p => $"{p.Key} {Cli.Bytes(p.Value)}")) + ")" : "";
        AnsiConsole.MarkupLine($"{plan.Caches.Count} cache(s) for {plan.LayerCount} layers; KV cache at context {r.Context}, batch {r.Batch}: [bold]{Cli.Bytes(r.KvBytesConverted)}[/]{Markup.Escape(byType)}.");
    }

    private static void Render(ModelInspection r)
    {
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
        if (r.Plan is { } plan)
        {
            RenderConverted(r, plan);
            return;
        }
        var table = new Table().Border(TableBorder.Simple).Title($"[bold]{Markup.Escape(Path.GetFileName(r.ModelPath))}[/]: {r.Layers.Count} attention layers");
        foreach (var h in new[] { "layer", "style", "heads", "kv heads", "head size", "window", "rotary", "dtype", "past cache input", $"KV @ {r.Context}×{r.Batch}" })
            table.AddColumn(h);
        foreach (var s in r.Layers)
        {
            var source = s.WindowSource switch { Detection.WindowSource.HfConfig => "config.json", Detection.WindowSource.GenAiConfig => "genai_config", Detection.WindowSource.Graph => "graph", Detection.WindowSource.CommandLine => "--window", Detection.WindowSource.PresentCache => "present cache", _ => "" };
            var window = (s.Window > 0 ? s.Window.ToString() : "global") + (source.Length > 0 ? $" ({source})" : "");
            var cache = s.SharesKvOf is { } shared ? $"layer {shared}'s (shared)" : s.Cache is null ? "-" : s.Cache.IsPacked ? $"{s.Cache.PastKey} (packed K+V)" : s.Cache.PastKey;
            table.AddRow(s.Layer.ToString(), StyleName(s.Style), s.NumHeads.ToString(), s.KvNumHeads.ToString(), s.HeadSize.ToString(),
                window, s.Rotary.Kind switch { Detection.RotaryKind.Fused => "fused", Detection.RotaryKind.AppliedBefore => "before", _ => "none" }, ElementTypes.DTypeName(s.ElementType), Markup.Escape(cache),
                Cli.Bytes(ModelInspection.CacheBytes(s, r.Context, r.Batch, 0)));
        }
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine($"KV cache at context {r.Context}, batch {r.Batch}: [bold]{Cli.Bytes(r.KvBytesAsExported)}[/] as exported (full cache per layer); {Cli.Bytes(r.KvBytesWithOwnWindows)} if each layer kept only its own window.");
        foreach (var issue in r.Detection.Issues)
            AnsiConsole.MarkupLine($"[yellow]{(issue.Blocking ? "incomplete" : "warning")}:[/] '{Markup.Escape(issue.Node)}': {Markup.Escape(issue.Message)}");
        if (r.Layers.Count > 0 && !r.Detection.IsComplete)
            AnsiConsole.MarkupLine("[yellow]warning:[/] detection is partial: convert will refuse this model (see above).");
        if (r.Layers.Count == 0)
            Cli.Error("no attention layers found in this model" + (r.Detection.Issues.Count > 0 ? " (see the warnings above)." : ": it has no Softmax/attention nodes that read a KV cache."));
    }
}
