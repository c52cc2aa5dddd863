using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Graph;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Onnx.Proto;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Detection;

[TestClass]
public sealed class DetectionTests
{
    // fixture, style, layers, heads, kv heads, head size, scale, windows ("16,16,16,16,16,0"; "" = all global), packed cache
    [TestMethod]
    [DataRow("llama-torchscript", ExportStyle.Decomposed, 2, 4, 2, 16, 0.25f, "")]
    [DataRow("mistral-torchscript", ExportStyle.Decomposed, 2, 4, 2, 16, 0.25f, "16,16")]
    [DataRow("qwen2-torchscript", ExportStyle.Decomposed, 2, 4, 2, 16, 0.25f, "")]
    [DataRow("gemma3-torchscript", ExportStyle.Decomposed, 6, 4, 2, 16, 0.0625f, "16,16,16,16,16,0")]
    [DataRow("gpt2-torchscript", ExportStyle.Decomposed, 2, 4, 4, 16, 0.25f, "")]
    [DataRow("phi3-torchscript", ExportStyle.Decomposed, 2, 4, 2, 16, 0.25f, "")]
    [DataRow("llama-dynamo", ExportStyle.OnnxAttention, 2, 4, 2, 16, 0.25f, "")]
    [DataRow("mistral-dynamo", ExportStyle.OnnxAttention, 2, 4, 2, 16, 0.25f, "16,16")]
    [DataRow("qwen2-dynamo", ExportStyle.OnnxAttention, 2, 4, 2, 16, 0.25f, "")]
    [DataRow("gemma3-dynamo", ExportStyle.OnnxAttention, 6, 4, 2, 16, 0.0625f, "16,16,16,16,16,0")]
    [DataRow("gpt2-dynamo", ExportStyle.OnnxAttention, 2, 4, 4, 16, 0.25f, "")]
    [DataRow("phi3-dynamo", ExportStyle.OnnxAttention, 2, 4, 2, 16, 0.25f, "")]
    [DataRow("llama-gqa", ExportStyle.GroupQueryAttention, 2, 4, 2, 16, 0.25f, "")]
    [DataRow("mistral-gqa", ExportStyle.GroupQueryAttention, 2, 4, 2, 16, 0.25f, "16,16")]
    [DataRow("qwen35-gqa-fp16", ExportStyle.GroupQueryAttention, 2, 4, 2, 16, 0.25f, "")]
    [DataRow("gpt2-ortattention", ExportStyle.OrtAttention, 5, 4, 4, 8, 0.35355339f, "")]
    [DataRow("gpt2-ortmha", ExportStyle.OrtMultiHeadAttention, 2, 4, 4, 16, 0.25f, "")]
    public void DetectsEveryLayerWithItsShapes(string fixture, ExportStyle style, int layers, int heads, int kvHeads, int headSize, float scale, string windows)
    {
        var model = OnnxModel.Load(TestPaths.Fixture(fixture));
        var report = AttentionDetector.Detect(model);
        Assert.IsEmpty(report.Issues, string.Join("; ", report.Issues.Select(i => $"{i.Node}: {i.Message}")));
        Assert.HasCount(layers, report.Sites);
        var expectedWindows = windows.Length == 0 ? Enumerable.Repeat(0, layers).ToArray() : windows.Split(',').Select(int.Parse).ToArray();
        var graph = new ModelGraph(model);
        foreach (var site in report.Sites)
        {
            Assert.AreEqual(style, site.Style);
            Assert.AreEqual(heads, site.NumHeads, $"layer {site.Layer} heads");
            Assert.AreEqual(kvHeads, site.KvNumHeads, $"layer {site.Layer} kv heads");
            Assert.AreEqual(headSize, site.HeadSize, $"layer {site.Layer} head size");
            Assert.AreEqual(scale, site.Scale, 1e-6f, $"layer {site.Layer} scale");
            Assert.AreEqual(expectedWindows[site.Layer], site.Window, $"layer {site.Layer} window");
            // The cache tensors are real graph inputs/outputs with the KV shape [B, kv heads, T, head size].
            Assert.IsNotNull(site.Cache, $"layer {site.Layer} has no cache");
            Assert.IsTrue(graph.IsGraphInput(site.Cache.PastKey));
            Assert.IsTrue(graph.IsGraphOutput(site.Cache.PresentKey));
            var past = graph.DeclaredShape(site.Cache.PastKey)!;
            if (site.Cache.IsPacked)
                CollectionAssert.AreEqual(new long[] { 2, -1, kvHeads, -1, headSize }, past);
            else
            {
                CollectionAssert.AreEqual(new long[] { -1, kvHeads, -1, headSize }, past);
                Assert.IsTrue(graph.IsGraphInput(site.Cache.PastValue!) && graph.IsGraphOutput(site.Cache.PresentValue!));
                StringAssert.EndsWith(site.Cache.PastKey, $".{site.Layer}.key");
            }
            Assert.IsTrue(graph.Producer(site.Output) is not null, "the output value must be produced by a node");
        }
    }

    [TestMethod]
    public void AGraphWithoutAttentionHasNoSites()
    {
        var model = new ModelProto { IrVersion = 10, Graph = new GraphProto { Name = "g" } };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        model.Graph.Input.Add(new ValueInfoProto { Name = "x" });
        model.Graph.Output.Add(new ValueInfoProto { Name = "y" });
        model.Graph.Node.Add(new NodeProto { OpType = "Relu", Input = { "x" }, Output = { "y" } });
        var report = AttentionDetector.Detect(OnnxModel.FromProto(model));
        Assert.IsEmpty(report.Sites);
    }

    [TestMethod]
    public void ASoftmaxThatIsNotAttentionIsReportedWithItsNodeName()
    {
        var model = new ModelProto { IrVersion = 10, Graph = new GraphProto { Name = "g" } };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        model.Graph.Input.Add(new ValueInfoProto { Name = "x" });
        model.Graph.Output.Add(new ValueInfoProto { Name = "y" });
        model.Graph.Node.Add(new NodeProto { Name = "classifier_softmax", OpType = "Softmax", Input = { "x" }, Output = { "y" } });
        var report = AttentionDetector.Detect(OnnxModel.FromProto(model));
        Assert.IsEmpty(report.Sites);
        Assert.HasCount(1, report.Issues);
        Assert.AreEqual("classifier_softmax", report.Issues[0].Node);
    }

    [TestMethod]
    public void WindowsComeFromConfigWhenTheGraphDoesNotSayThem()
    {
        var report = AttentionDetector.Detect(OnnxModel.Load(TestPaths.Fixture("gemma3-torchscript")));
        Assert.IsTrue(report.Sites.All(s => s.WindowSource == WindowSource.HfConfig));
        var gqa = AttentionDetector.Detect(OnnxModel.Load(TestPaths.Fixture("mistral-gqa")));
        Assert.IsTrue(gqa.Sites.All(s => s.WindowSource == WindowSource.Graph && s.Window == 16));
    }
}
