using System.Text.Json.Nodes;
using MixAttention.Onnx.Tests.Cli;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Zoo;

/// <summary>The zoo through the real <c>mixattn</c> executable: convert checks its output, inspect reads converted models.</summary>
[TestClass]
public sealed class ZooCliTests
{
    [TestMethod]
    public void ConvertComparesWithTheSourceAndInspectReadsTheResult()
    {
        var output = Path.Combine(TestPaths.TempDir(), "model.onnx");
        var (code, stdout, stderr) = InspectCliTests.Run("convert", ZooFixtures.Model("gemma3n_text-torchscript-p5"), "-o", output, "--json");
        Assert.AreEqual(0, code, stderr);
        var report = JsonNode.Parse(stdout)!;
        Assert.AreEqual("compare", report["check"]!["done"]!.GetValue<string>());
        Assert.IsTrue(report["check"]!["matches_source"]!.GetValue<bool>(), stdout);
        Assert.IsTrue(report["exact"]!.GetValue<bool>());

        (code, stdout, stderr) = InspectCliTests.Run("inspect", output, "--json", "--context", "1024");
        Assert.AreEqual(0, code, stderr);
        var doc = JsonNode.Parse(stdout)!;
        Assert.IsTrue(doc["converted"]!.GetValue<bool>());
        var layers = doc["layers"]!.AsArray();
        Assert.HasCount(6, layers);
        // Gemma-3n's own sharing survives: layers 4 and 5 read layers 2 and 3; four caches for six layers.
        Assert.AreEqual(2, layers[4]!["kv_source"]!.GetValue<int>());
        Assert.AreEqual(3, layers[5]!["kv_source"]!.GetValue<int>());
        Assert.HasCount(4, doc["cache_plan"]!["caches"]!.AsArray());
        // Two rings of 8 (one with readers: + chunk 1 → still 8) and two full caches of 1024: K+V × 2 heads × 8 × 4 bytes.
        Assert.AreEqual((8L + 8 + 1024 + 1024) * 2 * 2 * 8 * 4, doc["kv_cache"]!["bytes"]!.GetValue<long>());

        (code, stdout, _) = InspectCliTests.Run("inspect", output);
        Assert.AreEqual(0, code);
        StringAssert.Contains(stdout, "layout native");
        StringAssert.Contains(stdout, "ring of 8");
    }

    [TestMethod]
    public void TracedLengthExportIsExactByLayoutButWarnedAboutTheSource()
    {
        // The p20 TorchScript export of a sliding model only works at its traced lengths: the comparison with the source
        // disagrees, so convert must not print "exact" (the converted model itself matches torch: ZooTests).
        var output = Path.Combine(TestPaths.TempDir(), "model.onnx");
        var (code, stdout, stderr) = InspectCliTests.Run("convert", ZooFixtures.Model("mistral-torchscript-p20"), "-o", output);
        Assert.AreEqual(0, code, stderr);
        StringAssert.Contains(stdout, "differ from the source");
        Assert.DoesNotContain("exact:", stdout);
    }

    [TestMethod]
    public void InspectOfARefusedModelWarnsAndConvertExitsTwo()
    {
        var (code, stdout, _) = InspectCliTests.Run("inspect", ZooFixtures.Model("bloom-dynamo"), "--json");
        Assert.AreEqual(2, code);
        var doc = JsonNode.Parse(stdout)!;
        Assert.IsFalse(doc["complete"]!.GetValue<bool>());
        Assert.IsTrue(doc["issues"]!.AsArray().Any(i => i!["blocking"]!.GetValue<bool>()));

        var output = Path.Combine(TestPaths.TempDir(), "model.onnx");
        string stderr;
        (code, _, stderr) = InspectCliTests.Run("convert", ZooFixtures.Model("bloom-dynamo"), "-o", output);
        Assert.AreEqual(2, code);
        StringAssert.Contains(stderr, "ALiBi");
        Assert.IsFalse(File.Exists(output));
    }
}
