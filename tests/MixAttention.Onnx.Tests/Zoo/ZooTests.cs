using System.Text.Json.Nodes;
using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Zoo;

/// <summary>
/// Every export of the model zoo (graphs/zoo.tar.br, tools/fixtures/export_zoo.py) is either converted exactly or
/// refused with its reason: detection finds every layer with the index, window and sharing torch has; `native`
/// reproduces torch's logits teacher-forced over 48 tokens (six windows, past every traced length) with the ops and
/// reference backends; a `cai` retrofit runs and its ops and reference lowerings agree.
/// </summary>
[TestClass]
public sealed class ZooTests
{
    /// <summary>Exports the converter must refuse, with the words its reason must contain.</summary>
    private static readonly Dictionary<string, string> Refusals = new(StringComparer.Ordinal)
    {
        ["bloom-torchscript-p5"] = "ALiBi",
        ["bloom-dynamo"] = "ALiBi",
        ["gpt_oss-torchscript-p5"] = "attention sinks",
        ["gpt_oss-torchscript-p20"] = "attention sinks",
    };

    /// <summary>
    /// Exports that are not the torch model: torch's SDPA path, which the dynamo exporter traces, drops gpt-oss's
    /// attention sinks and Gemma-2's score softcapping (the unconverted export already differs from torch on ORT, as
    /// provenance.json records). For these the converted model must reproduce the export itself.
    /// </summary>
    private static readonly HashSet<string> UnfaithfulExports = new(StringComparer.Ordinal) { "gpt_oss-dynamo", "gemma2-dynamo" };

    public static IEnumerable<object[]> All() => ZooFixtures.Rows();

    public static IEnumerable<object[]> Convertible() => ZooFixtures.Names().Where(n => !Refusals.ContainsKey(n)).Select(n => new object[] { n });

    public static IEnumerable<object[]> ConvertibleByBackend() =>
        Convertible().SelectMany(r => new[] { new object[] { r[0], "ops" }, new object[] { r[0], "reference" } });

    public static IEnumerable<object[]> Refused() => Refusals.Select(kv => new object[] { kv.Key, kv.Value });

    [TestMethod]
    public void ZooCoversTwentyFiveArchitecturesWithTwoExportersEach()
    {
        var byArch = ZooFixtures.Names().GroupBy(n => ZooFixtures.Provenance(n)["arch"]!.GetValue<string>()).ToList();
        Assert.IsGreaterThanOrEqualTo(25, byArch.Count, $"architectures: {string.Join(", ", byArch.Select(g => g.Key))}");
        var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(ZooFixtures.Directory, "summary.json")))!;
        foreach (var arch in summary["architectures"]!.AsArray())
        {
            var name = arch!["arch"]!.GetValue<string>();
            var exported = arch["exports"]!.AsObject().Where(e => e.Value!["exported"]!.GetValue<bool>()).Select(e => e.Key).ToList();
            var failed = arch["exports"]!.AsObject().Where(e => !e.Value!["exported"]!.GetValue<bool>()).ToList();
            // Two exporters, or every one torch could not do has its reason recorded.
            Assert.IsTrue(exported.Select(e => e.Split('-')[0]).Distinct().Count() >= 2 || failed.All(f => f.Value!["why"]!.GetValue<string>().Length > 0),
                $"{name}: exported {string.Join(",", exported)}");
        }
    }

    [TestMethod]
    [DynamicData(nameof(All))]
    public void DetectionFindsEveryLayerWithTorchsWindowsAndSharing(string name)
    {
        var report = AttentionDetector.Detect(OnnxModel.Load(ZooFixtures.Model(name)));
        if (Refusals.TryGetValue(name, out var reason))
        {
            Assert.IsFalse(report.IsComplete, $"{name} must not look fully understood");
            Assert.IsTrue(report.Issues.Any(i => i.Message.Contains(reason, StringComparison.Ordinal)), $"{name}: no issue names '{reason}'");
            return;
        }
        Assert.IsTrue(report.IsComplete, $"{name}: {string.Join("; ", report.Blocking.Select(i => i.Node + ": " + i.Message))}");
        var model = ZooFixtures.Provenance(name)["model"]!;
        var layers = model["layers"]!.GetValue<int>();
        var caches = model["caches"]!.AsArray();
        var types = model["layer_types"] as JsonArray;
        Assert.HasCount(layers, report.Sites);
        for (int layer = 0; layer < layers; layer++)
        {
            var site = report.Sites[layer];
            Assert.AreEqual(layer, site.Layer);
            // torch's own cache: the layers past the caches share (Gemma-3n: the last layers read the last earlier cache of their type).
            int? shares = layer < caches.Count ? null : SharedSource(types!, layer, caches.Count);
            Assert.AreEqual(shares, site.SharesKvOf, $"{name} layer {layer}: shares");
            int window = shares is null
                ? caches[layer]!["capacity"] is JsonValue cap ? cap.GetValue<int>() + 1 : 0
                : types![layer]!.GetValue<string>() == "sliding_attention" ? 8 : 0;
            Assert.AreEqual(window, site.Window, $"{name} layer {layer}: window (source {site.WindowSource})");
        }
    }

    /// <summary>Gemma-3n's rule: a shared layer reads the last non-shared layer of its own type.</summary>
    private static int SharedSource(JsonArray types, int layer, int firstShared)
    {
        var type = types[layer]!.GetValue<string>();
        for (int j = firstShared - 1; j >= 0; j--)
            if (types[j]!.GetValue<string>() == type) return j;
        throw new AssertFailedException($"no earlier layer of type {type}");
    }

    [TestMethod]
    [DynamicData(nameof(ConvertibleByBackend))]
    public void NativeReproducesTorchPastTheTracedLength(string name, string backend)
    {
        var reference = ZooFixtures.Reference(name);
        var logits = ZooFixtures.Decode(ZooFixtures.Convert(ZooFixtures.Model(name), "native", backend), reference);
        float[] expected = reference.Logits;
        if (UnfaithfulExports.Contains(name))
        {
            using var source = new DecoderRunner(ZooFixtures.Model(name));
            expected = source.Run(reference.InputIds, reference.Batch, reference.Length, prefill: 5);
        }
        var diff = Compare.MaxAbsDiff(logits, expected);
        Assert.IsLessThanOrEqualTo(1e-4f, diff, $"{name} / {backend}: max |Δlogit| = {diff} over {reference.Length} tokens");
    }

    [TestMethod]
    [DynamicData(nameof(Convertible))]
    public void CaiRetrofitRunsAndBackendsAgree(string name)
    {
        var reference = ZooFixtures.Reference(name);
        var ops = ZooFixtures.Decode(ZooFixtures.Convert(ZooFixtures.Model(name), "cai", "ops", window: 4), reference);
        var plain = ZooFixtures.Decode(ZooFixtures.Convert(ZooFixtures.Model(name), "cai", "reference", window: 4), reference);
        Assert.IsTrue(ops.All(float.IsFinite), $"{name}: non-finite logits");
        var diff = Compare.MaxAbsDiff(ops, plain);
        Assert.IsLessThanOrEqualTo(1e-4f, diff, $"{name}: cai ops vs reference max |Δ| = {diff}");
    }

    [TestMethod]
    [DynamicData(nameof(Refused))]
    public void ConvertRefusesWithTheReasonAndWritesNothing(string name, string reason)
    {
        var dir = TestPaths.TempDir();
        var output = Path.Combine(dir, "model.onnx");
        var e = Assert.ThrowsExactly<MixAttentionException>(() =>
            Converter.Convert(ZooFixtures.Model(name), output, new ConversionOptions { Layout = "native" }));
        StringAssert.Contains(e.Message, reason);
        StringAssert.Contains(e.Message, "not explained");
        Assert.IsEmpty(Directory.GetFileSystemEntries(dir), "nothing may be written for a refused model");
    }
}
