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

    private static readonly Lazy<string> Gpt2OrtMhaDir = new(() => MakeGpt2OrtMha(Path.Combine(AppContext.BaseDirectory, "generated-fixtures", Gpt2OrtMha)));

    /// <summary>The names of the generated fixtures.</summary>
    public static IReadOnlyList<string> Names { get; } = new[] { Gpt2OrtMha };

    /// <summary>The folder of a generated fixture (made on first use), or null when <paramref name="name"/> is not one.</summary>
    public static string? Directory(string name) => name == Gpt2OrtMha ? Gpt2OrtMhaDir.Value : null;

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
        File.WriteAllText(Path.Combine(outDir, "provenance.json"), provenance.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        return outDir;
    }
}
