using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Lowering;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Runtime.Native;
using MixAttention.Onnx.Tests.Support;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Tests.Conversion;

[TestClass]
public sealed class ConversionTests
{
    internal static string Convert(string fixture, string layout, string backend, int? window = null)
    {
        var dir = TestPaths.TempDir();
        var output = Path.Combine(dir, "model.onnx");
        Converter.Convert(TestPaths.Fixture(fixture), output, new ConversionOptions { Layout = layout, Backend = backend, Window = window });
        return output;
    }

    /// <summary>
    /// SWA-trained models with the native layout are exact: the converted model, decoding 64 tokens
    /// (4× the window of 16: the ring wraps three times), gives torch's logits.
    /// </summary>
    [TestMethod]
    [DataRow("mistral-torchscript", "ops")]
    [DataRow("mistral-torchscript", "reference")]
    [DataRow("mistral-dynamo", "ops")]
    [DataRow("mistral-dynamo", "reference")]
    [DataRow("mistral-gqa", "ops")]
    [DataRow("mistral-gqa", "reference")]
    [DataRow("gemma3-torchscript", "ops")]
    [DataRow("gemma3-torchscript", "reference")]
    [DataRow("gemma3-dynamo", "ops")]
    [DataRow("gemma3-dynamo", "reference")]
    [DataRow("mistral-torchscript", "ort-gqa")]
    [DataRow("mistral-gqa", "ort-gqa")]
    [DataRow("gemma3-dynamo", "ort-gqa")]
    [DataRow("gemma3-torchscript", "ort-gqa")]
    public void NativeLayoutOfSlidingWindowModelMatchesTorch(string fixture, string backend)
    {
        var converted = Convert(fixture, "native", backend);
        var reference = TorchReference.For(fixture);
        using var runner = new DecoderRunner(converted, NativeLibraryPath.GetRequired());
        var logits = runner.Run(reference.InputIds, reference.Batch, reference.Length, prefill: 5);
        var diff = Compare.MaxAbsDiff(logits, reference.Logits);
        Assert.IsLessThanOrEqualTo(1e-4f, diff, $"{fixture} / {backend}: max |Δlogit| vs torch = {diff}");
    }

    /// <summary>A prefill longer than the window (S = 40 > W = 16) followed by decode is exact too.</summary>
    [TestMethod]
    [DataRow("mistral-torchscript")]
    [DataRow("gemma3-dynamo")]
    public void LongPrefillThenDecodeMatchesTorch(string fixture)
    {
        var converted = Convert(fixture, "native", "ops");
        var reference = TorchReference.For(fixture);
        using var runner = new DecoderRunner(converted, NativeLibraryPath.GetRequired());
        var logits = runner.Run(reference.InputIds, reference.Batch, reference.Length, prefill: 40);
        Assert.IsLessThanOrEqualTo(1e-4f, Compare.MaxAbsDiff(logits, reference.Logits));
    }

    /// <summary>Retrofit layouts (sharing, new windows) change the model; ops and the plain-ONNX reference must agree exactly.</summary>
    [TestMethod]
    [DataRow("llama-torchscript", "0s_0s", 4)]
    [DataRow("llama-dynamo", "0s_0s", 4)]
    [DataRow("llama-gqa", "0s_0s", 8)]
    [DataRow("qwen2-torchscript", "0s_1", 8)]
    [DataRow("phi3-torchscript", "0_0", 8)]
    [DataRow("phi3-dynamo", "0s_0s", 8)]
    [DataRow("gpt2-torchscript", "0s_0s", 8)]
    [DataRow("gpt2-dynamo", "0s_1", 8)]
    [DataRow("gpt2-ortattention", "cai", 8)]
    [DataRow("gpt2-ortmha", "0s_0s", 8)]
    [DataRow("gemma3-torchscript", "cai", 8)]
    [DataRow("gemma3-dynamo", "ma-pairs", 8)]
    [DataRow("mistral-gqa", "0s_0s", 8)]
    public void RetrofitOpsEqualsReference(string fixture, string layout, int window)
    {
        var ops = Convert(fixture, layout, "ops", window);
        var reference = Convert(fixture, layout, "reference", window);
        var rng = new Random(7);
        const int batch = 2, length = 40;
        var ids = Enumerable.Range(0, batch * length).Select(_ => (long)rng.Next(0, 200)).ToArray();
        using var a = new DecoderRunner(ops, NativeLibraryPath.GetRequired());
        using var b = new DecoderRunner(reference, NativeLibraryPath.GetRequired());
        // Prefill of 1 token keeps the sliding readers' residency rule at C = W (chunk 1) honest; the rest decodes.
        var la = a.Run(ids, batch, length, prefill: 3);
        var lb = b.Run(ids, batch, length, prefill: 3);
        var diff = Compare.MaxAbsDiff(la, lb);
        Assert.IsLessThanOrEqualTo(1e-4f, diff, $"{fixture} {layout}: ops vs reference max |Δ| = {diff}");
    }

    /// <summary>ORT's own GQA as a backend: global readers share the owner's buffer; it must agree with our ops.</summary>
    [TestMethod]
    [DataRow("llama-torchscript", "0_0")]
    [DataRow("gemma3-torchscript", "0_1s_2s_3s_4s_0")]
    [DataRow("llama-gqa", "0_0")]
    [DataRow("gpt2-dynamo", "0_0")]
    public void OrtGqaBackendEqualsOps(string fixture, string layout)
    {
        var ops = Convert(fixture, layout, "ops", 8);
        var gqa = Convert(fixture, layout, "ort-gqa", 8);
        var rng = new Random(11);
        const int batch = 1, length = 30;
        var ids = Enumerable.Range(0, batch * length).Select(_ => (long)rng.Next(0, 200)).ToArray();
        using var a = new DecoderRunner(ops, NativeLibraryPath.GetRequired());
        using var b = new DecoderRunner(gqa, NativeLibraryPath.GetRequired());
        var diff = Compare.MaxAbsDiff(a.Run(ids, batch, length, prefill: 4), b.Run(ids, batch, length, prefill: 4));
        Assert.IsLessThanOrEqualTo(1e-4f, diff, $"{fixture} {layout}: ops vs ort-gqa max |Δ| = {diff}");
    }

    [TestMethod]
    public void OrtGqaBackendRefusesSlidingReadersWithAReason()
    {
        var e = Assert.ThrowsExactly<MixAttentionException>(() => Convert("gemma3-torchscript", "cai", "ort-gqa", 8));
        StringAssert.Contains(e.Message, "layer 2");
        StringAssert.Contains(e.Message, "--backend ops");
    }

    [TestMethod]
    public void ReaderKvProjectionsAreRemovedAndOnlyOwnersHaveCaches()
    {
        var dir = TestPaths.TempDir();
        var output = Path.Combine(dir, "m.onnx");
        var report = Converter.Convert(TestPaths.Fixture("gemma3-torchscript"), output, new ConversionOptions { Layout = "cai" });
        var model = OnnxModel.Load(output);
        var plan = CachePlan.FromModel(model.Proto)!;
        var owners = report.Layout.Owners;
        CollectionAssert.AreEqual(owners.ToArray(), plan.Caches.Select(c => c.Owner).ToArray());
        var inputs = model.Proto.Graph.Input.Select(i => i.Name).ToHashSet();
        var outputs = model.Proto.Graph.Output.Select(i => i.Name).ToHashSet();
        for (int layer = 0; layer < 6; layer++)
        {
            bool owner = owners.Contains(layer);
            Assert.AreEqual(owner, inputs.Contains($"past_key_values.{layer}.key"), $"layer {layer} past input");
            Assert.AreEqual(owner, outputs.Contains($"present.{layer}.value"), $"layer {layer} present output");
        }
        // Two K and two V projections of 64x32 fp32 weights per reader layer (plus norms) are gone.
        Assert.IsGreaterThanOrEqualTo((6 - owners.Count) * 2 * 64 * 32, (int)report.Removed.Parameters);
        Assert.IsTrue(model.Proto.Graph.Input.Any(i => i.Name == "past_lengths"));
        Assert.IsTrue(report.KvBytesPerSequence.All(k => k.After < k.Before));
    }

    [TestMethod]
    [DataRow("native")]
    [DataRow("gemma3")]
    [DataRow("cai")]
    [DataRow("custom")]
    public void EveryFixtureConvertsAndLoadsInOrt(string layout)
    {
        foreach (var dir in TestPaths.FixtureDirectories())
        {
            var fixture = Path.GetFileName(dir);
            var spec = layout == "custom" ? CustomLayout(AttentionDetector.Detect(OnnxModel.Load(Path.Combine(dir, "model.onnx"))).Sites.Count) : layout;
            var output = Convert(fixture, spec, "ops", window: 8);
            using var options = new Microsoft.ML.OnnxRuntime.SessionOptions();
            options.RegisterCustomOpLibrary(NativeLibraryPath.GetRequired());
            using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(output, options);
            Assert.IsTrue(session.InputMetadata.ContainsKey("past_lengths"), fixture);
        }
    }

    /// <summary>A hand-written compact layout for n layers: a sliding pair sharing layer 0, a global owner at 2, then sliding pairs.</summary>
    private static string CustomLayout(int n) => string.Join("_", Enumerable.Range(0, n).Select(i =>
        i <= 1 ? "0s" : i == 2 ? "2" : i % 2 == 1 ? $"{i}s" : $"{i - 1}s"));

    [TestMethod]
    public void OutputIsNeverTheInputAndNotOverwrittenWithoutForce()
    {
        var dir = TestPaths.TempDir();
        var copy = Path.Combine(dir, "model.onnx");
        File.Copy(TestPaths.Fixture("llama-gqa"), copy);
        var before = File.ReadAllBytes(copy);
        Assert.ThrowsExactly<MixAttentionException>(() => Converter.Convert(copy, copy, new ConversionOptions { Layout = "native", Force = true }));
        var output = Path.Combine(dir, "out.onnx");
        Converter.Convert(copy, output, new ConversionOptions { Layout = "native" });
        Assert.ThrowsExactly<MixAttentionException>(() => Converter.Convert(copy, output, new ConversionOptions { Layout = "native" }));
        Converter.Convert(copy, output, new ConversionOptions { Layout = "native", Force = true });
        CollectionAssert.AreEqual(before, File.ReadAllBytes(copy), "the input changed");
    }

    [TestMethod]
    public void GenAiConfigDescribesTheConvertedModelWithKeysGenAiKnows()
    {
        var output = Convert("llama-gqa", "0_1s", "ops", 8);
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(Path.GetDirectoryName(output)!, "genai_config.json")))!;
        var decoder = config["model"]!["decoder"]!;
        Assert.AreEqual("model.onnx", decoder["filename"]!.GetValue<string>());
        Assert.IsNull(decoder["mixattention"], "genai rejects unknown keys under model.decoder");
        Assert.IsNull(decoder["inputs"]!["attention_mask"], "the converted model has no attention_mask input");
        Assert.AreEqual(8, decoder["sliding_window"]!["window_size"]!.GetValue<int>());
        CollectionAssert.AreEqual(new[] { 1 }, decoder["sliding_window"]!["layers"]!.AsArray().Select(n => n!.GetValue<int>()).ToArray());
        Assert.AreEqual("libmixattention_ops.so", decoder["session_options"]!["custom_ops_library"]!.GetValue<string>());
    }

    [TestMethod]
    public void InvalidLayoutNamesTheLayer()
    {
        var e = Assert.ThrowsExactly<MixAttention.Onnx.Layouts.LayoutException>(() => Convert("llama-torchscript", "1_0", "ops"));
        StringAssert.Contains(e.Message, "layer 0");
    }
}
