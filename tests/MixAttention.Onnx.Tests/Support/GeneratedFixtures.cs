using System.Text.Json.Nodes;
using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Graph;
using MixAttention.Onnx.Lowering;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Onnx.Proto;
using static MixAttention.Onnx.Graph.GraphBuilder;

namespace MixAttention.Onnx.Tests.Support;

/// <summary>
/// Fixtures made from committed ones when the tests run, instead of being committed (the repository has to stay under
/// ~10 MB to travel to the GPU machine). Each is written once per test process into the test output folder and then
/// behaves like a folder of graphs/ (<see cref="TestPaths.FixtureDir"/>, <see cref="TestPaths.FixtureDirectories"/>).
/// </summary>
public static class GeneratedFixtures
{
    /// <summary>The ORT transformers optimizer's MultiHeadAttention style (which the optimizer itself does not fuse for transformers-5 exports; graphs/README.md).</summary>
    public const string Gpt2OrtMha = "gpt2-ortmha";

    /// <summary>
    /// The GenAI-builder export of the Mistral config: graphs/mistral-gqa holds its config, genai_config and provenance,
    /// and its model is llama-gqa's with the window set (the two exports come from the same weights and differ only in
    /// GroupQueryAttention's local_window_size: checked byte for byte when the model file was dropped).
    /// </summary>
    public const string MistralGqa = "mistral-gqa";

    private static readonly Lazy<string> Gpt2OrtMhaDir = new(() => MakeGpt2OrtMha(Path.Combine(AppContext.BaseDirectory, "generated-fixtures", Gpt2OrtMha)));
    private static readonly Lazy<string> MistralGqaDir = new(() => MakeMistralGqa(Path.Combine(AppContext.BaseDirectory, "generated-fixtures", MistralGqa)));

    /// <summary>The names of the generated fixtures.</summary>
    public static IReadOnlyList<string> Names { get; } = new[] { Gpt2OrtMha, MistralGqa };

    /// <summary>The folder of a generated fixture (made on first use), or null when <paramref name="name"/> is not one.</summary>
    public static string? Directory(string name) => name switch
    {
        Gpt2OrtMha => Gpt2OrtMhaDir.Value,
        MistralGqa => MistralGqaDir.Value,
        _ => null,
    };

    /// <summary>
    /// gpt2-torchscript with each layer's decomposed attention core and KV Concat replaced by one
    /// com.microsoft.MultiHeadAttention (unidirectional=1, past/present key and value); weights unchanged, so
    /// graphs/reference/gpt2 still holds its torch logits.
    /// </summary>
    private static string MakeGpt2OrtMha(string outDir)
    {
        var source = TestPaths.Fixture("gpt2-torchscript");
        var model = OnnxModel.Load(source);
        var graph = new ModelGraph(model);
        var sites = AttentionDetector.Detect(graph, ModelConfig.ForModel(source)).Sites;
        var b = new GraphBuilder(graph, "mha");
        foreach (var site in sites)
        {
            int width = site.NumHeads * site.HeadSize;
            var q = SiteInputs.ToBshd(b, site.Query, site.QkvLayout, width, $"L{site.Layer}/q");
            var k = SiteInputs.ToBshd(b, site.Key!, site.QkvLayout, width, $"L{site.Layer}/k");
            var v = SiteInputs.ToBshd(b, site.Value!, site.QkvLayout, width, $"L{site.Layer}/v");
            var c = site.Cache!;
            graph.RemoveGraphOutput(c.PresentKey);
            graph.RemoveGraphOutput(c.PresentValue!);
            var outs = b.Ops("MultiHeadAttention", $"L{site.Layer}/MultiHeadAttention", new[] { q, k, v, "", "", "", c.PastKey, c.PastValue! }, 3, "com.microsoft",
                Int("num_heads", site.NumHeads), Int("unidirectional", 1), Float("scale", site.Scale));
            graph.ReplaceAllUses(site.Output, SiteInputs.FromBshd(b, site, outs[0]));
            graph.RemoveDeadCode();
            graph.RenameValue(outs[1], c.PresentKey);
            graph.RenameValue(outs[2], c.PresentValue!);
            graph.AddGraphOutput(TensorInfo(c.PresentKey, site.ElementType, "batch_size", (long)site.KvNumHeads, "total_sequence_length", (long)site.HeadSize));
            graph.AddGraphOutput(TensorInfo(c.PresentValue!, site.ElementType, "batch_size", (long)site.KvNumHeads, "total_sequence_length", (long)site.HeadSize));
        }
        graph.RemoveDeadCode();
        graph.SortTopologically();
        if (!model.Proto.OpsetImport.Any(o => o.Domain == "com.microsoft"))
            model.Proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        model.Proto.ProducerName = "mixattn tests/MixAttention.Onnx.Tests/Support/GeneratedFixtures.cs";
        System.IO.Directory.CreateDirectory(outDir);
        model.Save(Path.Combine(outDir, "model.onnx"), new OnnxSaveOptions { Overwrite = true });
        File.Copy(Path.Combine(TestPaths.FixtureDir("gpt2-torchscript"), "config.json"), Path.Combine(outDir, "config.json"), overwrite: true);
        var provenance = new JsonObject
        {
            ["arch"] = "gpt2",
            ["style"] = "ortmha",
            ["generated_by"] = "tests/MixAttention.Onnx.Tests/Support/GeneratedFixtures.cs, when the tests run",
            ["source"] = "graphs/gpt2-torchscript/model.onnx: each layer's decomposed attention and KV Concat replaced by com.microsoft.MultiHeadAttention (unidirectional=1, past/present key and value); weights unchanged",
            ["reference"] = Path.Combine(TestPaths.Graphs, "reference", "gpt2"),
        };
        WriteProvenance(outDir, provenance);
        return outDir;
    }

    /// <summary>
    /// graphs/llama-gqa/model.onnx with local_window_size = the window recorded in graphs/mistral-gqa/provenance.json
    /// (export.local_window_size) on every GroupQueryAttention node, beside mistral-gqa's committed config files; its
    /// provenance points at graphs/reference/mistral, so the torch logits of the Mistral model check it.
    /// </summary>
    private static string MakeMistralGqa(string outDir)
    {
        var committed = Path.Combine(TestPaths.Graphs, MistralGqa);
        var provenance = JsonNode.Parse(File.ReadAllText(Path.Combine(committed, "provenance.json")))!.AsObject();
        long window = provenance["export"]!["local_window_size"]!.GetValue<long>();
        var model = OnnxModel.Load(TestPaths.Fixture("llama-gqa"));
        int set = 0;
        foreach (var node in model.Proto.Graph.Node.Where(n => n.OpType == "GroupQueryAttention"))
        {
            var attribute = node.Attribute.Single(a => a.Name == "local_window_size");
            if (attribute.I != -1)
                throw new InvalidOperationException($"llama-gqa node {node.Name}: local_window_size {attribute.I}, expected -1 (a global GQA export)");
            attribute.I = window;
            set++;
        }
        int layers = provenance["model"]!["layers"]!.GetValue<int>();
        if (set != layers)
            throw new InvalidOperationException($"llama-gqa has {set} GroupQueryAttention nodes, mistral-gqa's provenance {layers} layers");
        System.IO.Directory.CreateDirectory(outDir);
        model.Save(Path.Combine(outDir, "model.onnx"), new OnnxSaveOptions { Overwrite = true });
        foreach (var file in new[] { "config.json", "genai_config.json" })
            File.Copy(Path.Combine(committed, file), Path.Combine(outDir, file), overwrite: true);
        provenance["reference"] = Path.GetFullPath(Path.Combine(committed, provenance["reference"]!.GetValue<string>()));
        provenance["model_file"] = $"made when the tests run (tests/MixAttention.Onnx.Tests/Support/GeneratedFixtures.cs): graphs/llama-gqa/model.onnx with local_window_size = {window}";
        WriteProvenance(outDir, provenance);
        return outDir;
    }

    private static void WriteProvenance(string outDir, JsonObject provenance) =>
        File.WriteAllText(Path.Combine(outDir, "provenance.json"), provenance.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
}
