using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Graph;
using MixAttention.Onnx.Layouts;
using MixAttention.Onnx.Lowering;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Conversion;

/// <summary>
/// The converter pipeline: load → detect attention sites → parse and validate the layout → lower through a
/// backend → remove dead code → write model + cache plan (+ genai_config.json). Never touches the input;
/// the output appears atomically.
/// </summary>
public static class Converter
{
    /// <summary>Progress stages reported to the caller.</summary>
    public enum Stage
    {
        /// <summary>Reading the model file (never its external weights).</summary>
        Loading,
        /// <summary>Finding attention sites.</summary>
        Detecting,
        /// <summary>Rewriting layers; the fraction counts layers done.</summary>
        Lowering,
        /// <summary>Writing model and weights; the fraction counts bytes.</summary>
        Saving,
        /// <summary>Finished.</summary>
        Done,
    }

    /// <summary>Converts <paramref name="input"/> into <paramref name="output"/>.</summary>
    public static ConversionReport Convert(string input, string output, ConversionOptions options, IProgress<(Stage Stage, double Fraction)>? progress = null)
    {
        var clock = Stopwatch.StartNew();
        SafeFiles.CheckPath(input, "input model");
        SafeFiles.CheckPath(output, "output (-o)");
        var outFull = Path.GetFullPath(output);
        if (outFull.EndsWith(Path.DirectorySeparatorChar) || Directory.Exists(outFull))
            throw new MixAttentionException($"the output '{output}' is a folder; name the model file to write (e.g. {Path.Combine(output, "model.onnx")}).");
        // Cheap checks before the work; Save makes them all again, on real paths and file identities.
        if (SafeFiles.Stat(outFull, follow: true) is { } target && SafeFiles.Stat(Path.GetFullPath(input), follow: true) is { } source && target.SameFileAs(source))
            throw new MixAttentionException($"the output '{output}' is the input model; choose another path (the input is never overwritten).");
        if (SafeFiles.Stat(outFull, follow: false) is { IsRegular: true } && !options.Force)
            throw new MixAttentionException($"'{output}' already exists; pass --force to overwrite it.");

        progress?.Report((Stage.Loading, 0));
        var model = OnnxModel.Load(input, options.Load);
        var config = ModelConfig.ForModel(model.SourcePath, options.Load.AllowExternalDataOutsideModelFolder);
        var (report, graph) = ConvertInMemory(model, config, options, progress);

        progress?.Report((Stage.Saving, 0));
        model.Save(outFull, new OnnxSaveOptions
        {
            Overwrite = options.Force,
            LinkExternalData = options.LinkWeights,
            SideFiles = SideFiles(config, outFull, report.Plan),
            ProtectedFiles = new[] { config.HfConfigPath, config.GenAiConfigPath }.OfType<string>().ToArray(),
        }, new Progress<double>(f => progress?.Report((Stage.Saving, f))));
        progress?.Report((Stage.Done, 1));
        return report with { Output = outFull, Elapsed = clock.Elapsed };
    }

    /// <summary>Converts a loaded model in place (its proto is rewritten) and returns the report.</summary>
    internal static (ConversionReport Report, ModelGraph Graph) ConvertInMemory(OnnxModel model, ModelConfig config, ConversionOptions options,
        IProgress<(Stage Stage, double Fraction)>? progress = null)
    {
        if (CachePlan.FromModel(model.Proto) is not null)
            throw new MixAttentionException("this model is already a MixAttention model (it has a cache plan); convert the original export instead.");
        progress?.Report((Stage.Detecting, 0));
        var graph = new ModelGraph(model);
        var detection = AttentionDetector.Detect(graph, config);
        if (detection.Sites.Count == 0 && detection.Blocking.Count == 0)
            throw new MixAttentionException("no attention layers found in this model" +
                (detection.Issues.Count > 0 ? ": " + string.Join("; ", detection.Issues.Select(i => $"node '{i.Node}': {i.Message}")) : "."));
        if (!detection.IsComplete)
            throw new MixAttentionException(RefusalMessage(detection));

        var layoutContext = LayoutContext.FromSites(detection.Sites, options.Window);
        var layout = LayoutParser.Parse(options.Layout, layoutContext);
        var differences = LayoutValidator.Differences(layout, layoutContext);

        var backend = LayoutLowering.Backend(options.Backend);
        var quantization = KvQuantPlanner.Plan(layout, detection.Sites, options);
        var lowering = LayoutLowering.Apply(graph, detection.Sites, layout, backend,
            new Progress<(int Done, int Total)>(p => progress?.Report((Stage.Lowering, (double)p.Done / p.Total))), quantization,
            options.PagedBlockSize);
        if (quantization.Count > 0)
        {
            var dtypes = string.Join(", ", quantization.Values.Select(q => ElementTypes.DTypeName(q.ElementType)).Distinct());
            var rule = KvScaleRule.Parse(options.KvScale);
            differences = differences.Append($"caches: {quantization.Count} of {layout.Owners.Count} owner caches are quantized ({dtypes}, scales {rule}" +
                (rule.Kind == KvScaleRule.Kinds.Calibrate ? $" on {options.Calibration!.Source}" : "") +
                $", per {KvScaleTensors.Name(options.KvScaleGranularity)}): logits are close to the source's, not equal.").ToList();
        }

        var kv = new[] { 4096L, 32768L }.Select(t => (t, KvMemory.Unconverted(layoutContext, t), lowering.Plan.Caches.Sum(c => Inspection.ModelInspection.PlanCacheBytes(c, t, 1)))).ToArray();
        var report = new ConversionReport
        {
            Input = model.SourcePath ?? "(in memory)",
            Styles = detection.Styles,
            Layout = layout,
            Plan = lowering.Plan,
            Removed = lowering.Removed,
            KvBytesPerSequence = kv,
            Differences = differences,
            SourceCaches = detection.Sites.Count(s => s.SharesKvOf is null),
        };
        return (report, graph);
    }

    /// <summary>
    /// One line for a model whose attention is not fully understood: what is unexplained and the first reason a
    /// candidate node gave (e.g. an unsupported feature), so the user sees why without a second command.
    /// </summary>
    internal static string RefusalMessage(DetectionReport detection)
    {
        var blocking = string.Join("; ", detection.Blocking.Select(i => $"{i.Node}: {i.Message}"));
        var reason = detection.Issues.FirstOrDefault(i => !i.Blocking);
        return "refusing to convert: " + blocking
            + (reason is null ? "" : $" First reason found: node '{reason.Node}': {reason.Message}")
            + " Nothing was written.";
    }

    /// <summary>
    /// The side files of the output: config.json as the source has it, and genai_config.json rewritten so it describes the converted model:
    /// the file name, the inputs that still exist, the sliding layers of the layout, and (ops backend) the custom-op
    /// library. Only keys onnxruntime-genai knows are written (it rejects unknown ones); the cache plan itself lives
    /// in the model's metadata.
    /// </summary>
    private static List<(string Name, byte[] Content)> SideFiles(ModelConfig config, string output, CachePlan plan)
    {
        // Staged and published by OnnxModel.Save with the model (all or nothing), never over an input's own file,
        // never through a link, and over another file only with --force.
        var sides = new List<(string Name, byte[] Content)>();
        if (config.HfConfigPath is { } hf)
            sides.Add(("config.json", SafeFiles.ReadAllBytes(hf, "config.json", SafeFiles.MaxConfigBytes)));
        if (config.GenAiConfig is { } genai)
        {
            var copy = (JsonObject)genai.DeepClone();
            if (copy["model"] is JsonObject modelSection && modelSection["decoder"] is JsonObject decoder)
            {
                decoder["filename"] = Path.GetFileName(output);
                if (decoder["inputs"] is JsonObject inputs)
                {
                    if (plan.AttentionMask is null) inputs.Remove("attention_mask");
                    if (plan.PositionIds is null) inputs.Remove("position_ids");
                }
                var sliding = Enumerable.Range(0, plan.LayerCount).Where(l => plan.Windows[l] > 0).ToList();
                if (sliding.Count == 0)
                    decoder.Remove("sliding_window");
                else
                {
                    var window = decoder["sliding_window"] as JsonObject ?? new JsonObject();
                    window["window_size"] = plan.Windows.Max();
                    window["layers"] = new JsonArray(sliding.Select(l => (JsonNode)JsonValue.Create(l)).ToArray());
                    decoder["sliding_window"] = window;
                }
                if (plan.RunsOnCustomOps)
                {
                    var sessionOptions = decoder["session_options"] as JsonObject ?? new JsonObject();
                    sessionOptions["custom_ops_library"] = "libmixattention_ops.so";
                    decoder["session_options"] = sessionOptions;
                }
            }
            sides.Add(("genai_config.json", System.Text.Encoding.UTF8.GetBytes(copy.ToJsonString(new JsonSerializerOptions { WriteIndented = true }))));
        }
        return sides;
    }
}
