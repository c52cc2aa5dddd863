using System.Text.Json.Nodes;
using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Zoo;

/// <summary>
/// Windows come from config.json by layer index, whatever form the config takes; the graph's present caches (which
/// keep W - 1 tokens on sliding layers) must agree, else detection is blocked.
/// </summary>
[TestClass]
public sealed class ConfigMappingTests
{
    private static DetectionReport DetectWith(string export, Action<JsonObject> edit)
    {
        var dir = TestPaths.TempDir();
        File.Copy(ZooFixtures.Model(export), Path.Combine(dir, "model.onnx"));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(ZooFixtures.Dir(export), "config.json")))!.AsObject();
        edit(config);
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        return AttentionDetector.Detect(OnnxModel.Load(Path.Combine(dir, "model.onnx")));
    }

    [TestMethod]
    public void Qwen2MaxWindowLayersWithoutLayerTypesMapsByIndex()
    {
        // The zoo's qwen2: use_sliding_window, max_window_layers = 2, 4 layers; layers 2 and 3 slide (window 8).
        var report = DetectWith("qwen2-torchscript-p5", c => c.Remove("layer_types"));
        Assert.IsTrue(report.IsComplete, string.Join("; ", report.Blocking.Select(i => i.Message)));
        CollectionAssert.AreEqual(new[] { 0, 0, 8, 8 }, report.Sites.Select(s => s.Window).ToArray());
        Assert.IsTrue(report.Sites.All(s => s.WindowSource == WindowSource.HfConfig));
    }

    [TestMethod]
    public void AConfigThatContradictsThePresentCacheBlocks()
    {
        // Gemma-2 alternates sliding and full layers; a config saying every layer is full contradicts the presents
        // that keep 7 tokens on layers 0 and 2.
        var report = DetectWith("gemma2-torchscript-p5", c => c["layer_types"] = new JsonArray("full_attention", "full_attention", "full_attention", "full_attention"));
        Assert.IsFalse(report.IsComplete);
        Assert.IsTrue(report.Blocking.Any(i => i.Message.Contains("layer 0") && i.Message.Contains("attends globally")),
            string.Join("; ", report.Blocking.Select(i => i.Message)));
    }

    [TestMethod]
    public void WithoutAConfigThePresentCacheGivesTheWindow()
    {
        var dir = TestPaths.TempDir();
        File.Copy(ZooFixtures.Model("gemma3_text-dynamo"), Path.Combine(dir, "model.onnx"));
        var report = AttentionDetector.Detect(OnnxModel.Load(Path.Combine(dir, "model.onnx")));
        Assert.IsTrue(report.IsComplete);
        CollectionAssert.AreEqual(new[] { 8, 8, 0 }, report.Sites.Select(s => s.Window).ToArray());
        Assert.AreEqual(WindowSource.PresentCache, report.Sites[0].WindowSource);
    }
}
