using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Zoo;

/// <summary>
/// KV sharing as other builders write it with GroupQueryAttention (Gemma-3n / Gemma-4 style): a layer passes empty K/V
/// and takes another layer's present as its past. Made here from the zoo's llama-gqa by rewiring layer 1 that way.
/// </summary>
[TestClass]
public sealed class GqaSharingTests
{
    private static string SharedModel()
    {
        var model = OnnxModel.Load(ZooFixtures.Model("llama-gqa"));
        var graph = model.Proto.Graph;
        var gqa = graph.Node.Where(n => n.OpType == "GroupQueryAttention").ToList();
        Assert.HasCount(2, gqa);
        var (owner, reader) = (gqa[0], gqa[1]);
        reader.Input[1] = "";
        reader.Input[2] = "";
        reader.Input[3] = owner.Output[1];
        reader.Input[4] = owner.Output[2];
        reader.Output[1] = "unused_present_key";
        reader.Output[2] = "unused_present_value";
        foreach (var name in new[] { "past_key_values.1.key", "past_key_values.1.value" })
            graph.Input.Remove(graph.Input.Single(i => i.Name == name));
        foreach (var name in new[] { "present.1.key", "present.1.value" })
            graph.Output.Remove(graph.Output.Single(o => o.Name == name));
        var path = Path.Combine(TestPaths.TempDir(), "model.onnx");
        model.Save(path);
        return path;
    }

    [TestMethod]
    public void ReaderIsFoundAndNativeKeepsTheSharing()
    {
        var shared = SharedModel();
        var report = AttentionDetector.Detect(OnnxModel.Load(shared), ModelConfig.Empty);
        Assert.IsTrue(report.IsComplete, string.Join("; ", report.Issues.Select(i => i.Message)));
        Assert.HasCount(2, report.Sites);
        Assert.IsNull(report.Sites[0].SharesKvOf);
        Assert.AreEqual(0, report.Sites[1].SharesKvOf);

        // Same computation: the original llama-gqa with layer 1 made a reader of layer 0 ("0_0").
        var reference = ZooFixtures.Reference("llama-gqa");
        float[] Run(string source, string layout, string backend) => ZooFixtures.Decode(ZooFixtures.Convert(source, layout, backend), reference);
        var expected = Run(ZooFixtures.Model("llama-gqa"), "0_0", "reference");
        foreach (var backend in new[] { "ops", "reference" })
        {
            var diff = Compare.MaxAbsDiff(Run(shared, "native", backend), expected);
            Assert.IsLessThanOrEqualTo(1e-4f, diff, $"{backend}: max |Δ| = {diff}");
        }
    }

    [TestMethod]
    public void ALayoutThatMakesTheReaderOwnACacheIsRefused()
    {
        var e = Assert.ThrowsExactly<MixAttentionException>(() =>
            Converter.Convert(SharedModel(), Path.Combine(TestPaths.TempDir(), "model.onnx"), new ConversionOptions { Layout = "0_1" }));
        StringAssert.Contains(e.Message, "computes no keys/values of its own");
    }
}
