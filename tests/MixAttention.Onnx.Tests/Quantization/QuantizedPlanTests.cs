using System.Text.Json.Nodes;
using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Onnx.Proto;
using MixAttention.Onnx.Plan;
using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Tests.Cli;
using MixAttention.Onnx.Tests.Reliability;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Quantization;

/// <summary>
/// The cache plan of quantized caches (version 2: a cache's dtype and its scale tensors), what the converter writes into
/// the graph for them, how hostile plans are refused, per-layer kv_dtype in JSON layouts, calibration determinism and
/// the KV bytes the runtime and inspect report.
/// </summary>
[TestClass]
public sealed class QuantizedPlanTests
{
    private static string Source => TestPaths.Fixture("llama-gqa");

    private static string Convert(string model, string layout = "native", string backend = "ops", string dtype = "int8", string scale = "absmax:4",
        KvScaleGranularity granularity = KvScaleGranularity.Channel, int? window = null)
    {
        var output = Path.Combine(TestPaths.TempDir(), "model.onnx");
        Converter.Convert(model, output, new ConversionOptions { Layout = layout, Backend = backend, Window = window, KvDType = dtype, KvScale = scale, KvScaleGranularity = granularity });
        return output;
    }

    private static CachePlan PlanOf(string model) => CachePlan.FromModel(ModelProto.Parser.ParseFrom(File.ReadAllBytes(model)))!;

    [TestMethod]
    [DataRow("ops", KvScaleGranularity.Tensor)]
    [DataRow("ops", KvScaleGranularity.Head)]
    [DataRow("reference", KvScaleGranularity.Channel)]
    [DataRow("ort-gqa", KvScaleGranularity.Head)]
    public void PlanRecordsDTypeAndScalesAndRoundTrips(string backend, KvScaleGranularity granularity)
    {
        var model = Convert(Source, backend: backend, granularity: granularity);
        var plan = PlanOf(model);
        Assert.AreEqual("fp32", plan.ModelDType);
        var proto = OnnxModel.Load(model).Proto;
        // GQA scales per tensor or channel only: a per-head request is written (exactly) as per channel.
        var expected = backend == "ort-gqa" && granularity == KvScaleGranularity.Head ? KvScaleGranularity.Channel : granularity;
        foreach (var c in plan.Caches)
        {
            Assert.AreEqual("int8", c.DType);
            Assert.IsTrue(c.IsQuantized);
            Assert.IsNotNull(c.Scales);
            Assert.AreEqual(expected, c.Scales.Granularity);
            foreach (var name in new[] { c.Scales.Key, c.Scales.Value })
            {
                var t = proto.Graph.Initializer.Single(i => i.Name == name);
                Assert.AreEqual(ElementTypes.Float, t.DataType);
                CollectionAssert.AreEqual(KvScaleTensors.Shape(expected, c.KvNumHeads, c.HeadSize), t.Dims.ToArray());
                Assert.IsTrue(t.FloatData.All(s => s == 4f / 127f), $"{name}: absmax:4 gives 4/127 everywhere");
            }
            foreach (var io in new[] { c.PastKey, c.PastValue })
                Assert.AreEqual(ElementTypes.Int8, proto.Graph.Input.Single(i => i.Name == io).Type.TensorType.ElemType);
            foreach (var io in new[] { c.PresentKey, c.PresentValue })
                Assert.AreEqual(ElementTypes.Int8, proto.Graph.Output.Single(i => i.Name == io).Type.TensorType.ElemType);
        }
        var json = plan.ToJson();
        StringAssert.Contains(json, "\"version\":2");
        StringAssert.Contains(json, "\"scales\":{\"granularity\":");
        var again = CachePlan.FromJson(json);
        Assert.AreEqual(json, again.ToJson());
        Assert.AreEqual(plan.Caches[0].Scales, again.Caches[0].Scales);
    }

    [TestMethod]
    public void FloatPlansStayVersionOne()
    {
        var plan = PlanOf(Convert(Source, dtype: "auto"));
        StringAssert.Contains(plan.ToJson(), "\"version\":1,");
        Assert.IsNull(plan.Caches[0].Scales);
        Assert.AreEqual("fp32", plan.Caches[0].DType);
    }

    [TestMethod]
    public void OpsReadersWireTheirOwnersScales()
    {
        var model = Convert(Source, layout: "0_0");
        var proto = OnnxModel.Load(model).Proto;
        var scales = PlanOf(model).Caches[0].Scales!;
        var owner = proto.Graph.Node.Single(n => n.OpType == OpSpec.WindowedAttention);
        var reader = proto.Graph.Node.Single(n => n.OpType == OpSpec.SharedKvAttention);
        CollectionAssert.AreEqual(new[] { scales.Key, scales.Value }, owner.Input.Skip(9).ToArray());
        CollectionAssert.AreEqual(new[] { scales.Key, scales.Value }, reader.Input.Skip(7).ToArray());
    }

    [TestMethod]
    public void Fp8ReferenceUsesSaturatingCastsAndNeedsOpset19()
    {
        var dynamo = ZooFixtures.Model("llama-dynamo"); // opset 23
        var proto = OnnxModel.Load(Convert(dynamo, backend: "reference", dtype: "fp8")).Proto;
        var casts = proto.Graph.Node.Where(n => n.OpType == "Cast" && n.Attribute.Any(a => a.Name == "to" && a.I == ElementTypes.Float8E4M3)).ToList();
        Assert.IsNotEmpty(casts);
        Assert.IsTrue(casts.All(c => c.Attribute.Any(a => a.Name == "saturate" && a.I == 1)));
        var opsPlan = PlanOf(Convert(dynamo, dtype: "fp8"));
        Assert.AreEqual("fp8e4m3", opsPlan.Caches[0].DType);
        Assert.AreEqual("uint8", opsPlan.Caches[0].Storage, "the ops backend declares fp8 caches as the op's uint8 alias");
        Assert.IsNull(PlanOf(Convert(dynamo, backend: "reference", dtype: "fp8")).Caches[0].Storage);
        var torchscript = ZooFixtures.Model("llama-torchscript-p5"); // opset 18
        var e = Assert.ThrowsExactly<MixAttentionException>(() => Convert(torchscript, backend: "reference", dtype: "fp8"));
        StringAssert.Contains(e.Message, "opset 18");
    }

    [TestMethod]
    public void Fp8TypedModelsAreRefusedByTheCSharpRuntimeWithTheReason()
    {
        var model = Convert(ZooFixtures.Model("llama-dynamo"), backend: "reference", dtype: "fp8");
        var e = Assert.ThrowsExactly<MixAttentionException>(() => MixAttentionModel.Open(model));
        StringAssert.Contains(e.Message, "fp8");
    }

    [TestMethod]
    public void JsonLayoutSetsKvDTypePerLayerAndReadersInherit()
    {
        var layout = """{"version": 1, "layers": [{"kv": 0, "window": 0, "kv_dtype": "int8"}, {"kv": 0, "window": 0}]}""";
        var plan = PlanOf(Convert(Source, layout: layout, dtype: "auto"));
        Assert.AreEqual("int8", plan.Caches.Single().DType);
        var mixed = """{"version": 1, "layers": [{"kv": 0, "window": 0, "kv_dtype": "int8"}, {"kv": 1, "window": 0}]}""";
        var both = PlanOf(Convert(Source, layout: mixed, dtype: "auto"));
        CollectionAssert.AreEqual(new[] { "int8", "fp32" }, both.Caches.Select(c => c.DType).ToArray());
        var agrees = """{"version": 1, "layers": [{"kv": 0, "window": 0, "kv_dtype": "int8"}, {"kv": 0, "window": 0, "kv_dtype": "int8"}]}""";
        Assert.AreEqual("int8", PlanOf(Convert(Source, layout: agrees, dtype: "auto")).Caches.Single().DType);
    }

    [TestMethod]
    [DataRow("""{"version": 1, "layers": [{"kv": 0, "window": 0, "kv_dtype": "int8"}, {"kv": 0, "window": 0, "kv_dtype": "fp8"}]}""", "layer 1")]
    [DataRow("""{"version": 1, "layers": [{"kv": 0, "window": 0}, {"kv": 0, "window": 0, "kv_dtype": "int8"}]}""", "layer 1")]
    [DataRow("""{"version": 1, "layers": [{"kv": 0, "window": 0, "kv_dtype": "fp16"}, {"kv": 1, "window": 0}]}""", "layer 0")]
    [DataRow("""{"version": 1, "layers": [{"kv": 0, "window": 0, "kv_dtype": "int4"}, {"kv": 1, "window": 0}]}""", "layers[0]")]
    [DataRow("""{"version": 1, "layers": [{"kv": 0, "window": 0, "kv_dtype": 8}, {"kv": 1, "window": 0}]}""", "layers[0]")]
    public void ConflictingOrUnknownKvDTypeNamesTheLayer(string layout, string layer)
    {
        var dir = TestPaths.TempDir();
        var e = Assert.Throws<MixAttentionException>(() => Converter.Convert(Source, Path.Combine(dir, "m.onnx"),
            new ConversionOptions { Layout = layout, KvScale = "absmax:4" }));
        StringAssert.Contains(e.Message, layer);
        Assert.IsEmpty(Directory.GetFileSystemEntries(dir), "nothing is written for a refused layout");
    }

    [TestMethod]
    public void LayoutJsonRoundTripsKvDType()
    {
        var layout = LayoutJsonOf("""{"version": 1, "layers": [{"kv": 0, "window": 0, "kv_dtype": "fp8"}, {"kv": 0, "window": 0}]}""");
        StringAssert.Contains(layout.ToJson(), "\"kv_dtype\": \"fp8\"");
        Assert.IsTrue(LayoutJsonOf(layout.ToJson()).HasSameAssignments(layout));
    }

    private static MixAttention.Onnx.Layouts.MixAttentionLayout LayoutJsonOf(string json) => MixAttention.Onnx.Layouts.LayoutJson.Read(json);

    [TestMethod]
    public void OrtGqaRefusesWhatItsQuantizedCachesCannotDo()
    {
        var readers = Assert.ThrowsExactly<MixAttentionException>(() => Convert(Source, layout: "0_0", backend: "ort-gqa"));
        StringAssert.Contains(readers.Message, "layer 1 reads layer 0's quantized cache");
        var ring = Assert.ThrowsExactly<MixAttentionException>(() => Convert(ZooFixtures.Model("qwen3-torchscript-p5"), backend: "ort-gqa"));
        StringAssert.Contains(ring.Message, "multiple of 16");
    }

    [TestMethod]
    public void Fp16AndBf16MustBeTheModelsOwnType()
    {
        var e = Assert.ThrowsExactly<MixAttentionException>(() => Convert(Source, dtype: "fp16"));
        StringAssert.Contains(e.Message, "fp32");
        var fp16 = TestPaths.Fixture("qwen35-gqa-fp16");
        Assert.AreEqual("fp16", PlanOf(Convert(fp16, dtype: "fp16")).Caches[0].DType);
        Assert.ThrowsExactly<MixAttentionException>(() => Convert(fp16, dtype: "bf16"));
    }

    [TestMethod]
    public void CalibrateWithoutACalibrationRunIsAClearError()
    {
        var e = Assert.ThrowsExactly<MixAttentionException>(() => Convert(Source, scale: "calibrate"));
        StringAssert.Contains(e.Message, "--calibrate");
    }

    [TestMethod]
    public void CalibrationIsDeterministicAndGivesAbsMaxOverQmax()
    {
        var tokens = QuantizedZooTests.Tokens(seed: 1, count: 40);
        var a = KvCalibrator.Run(Source, tokens, "t");
        var b = KvCalibrator.Run(Source, tokens, "t");
        foreach (var layer in a.Layers)
        {
            CollectionAssert.AreEqual(a.AbsMax(layer)!.Value.Key, b.AbsMax(layer)!.Value.Key);
            CollectionAssert.AreEqual(a.AbsMax(layer)!.Value.Value, b.AbsMax(layer)!.Value.Value);
            Assert.IsTrue(a.AbsMax(layer)!.Value.Key.All(x => x > 0 && float.IsFinite(x)));
        }
        var other = KvCalibrator.Run(Source, QuantizedZooTests.Tokens(seed: 2, count: 40), "t");
        CollectionAssert.AreNotEqual(a.AbsMax(0)!.Value.Key, other.AbsMax(0)!.Value.Key, "different tokens must give different absmax");

        var output = Path.Combine(TestPaths.TempDir(), "model.onnx");
        Converter.Convert(Source, output, new ConversionOptions { Layout = "native", KvDType = "int8", KvScaleGranularity = KvScaleGranularity.Channel, Calibration = a });
        var plan = PlanOf(output);
        var proto = OnnxModel.Load(output).Proto;
        var scales = proto.Graph.Initializer.Single(t => t.Name == plan.Caches[0].Scales!.Key).FloatData.ToArray();
        CollectionAssert.AreEqual(a.AbsMax(0)!.Value.Key.Select(x => x / 127f).ToArray(), scales);
        // fp8: qmax 448; per head: the head's largest channel.
        Converter.Convert(Source, output, new ConversionOptions { Layout = "native", KvDType = "fp8", KvScaleGranularity = KvScaleGranularity.Head, Calibration = a, Force = true });
        var heads = OnnxModel.Load(output).Proto.Graph.Initializer.Single(t => t.Name == PlanOf(output).Caches[0].Scales!.Key).FloatData.ToArray();
        var k = a.AbsMax(0)!.Value.Key;
        int d = k.Length / heads.Length;
        CollectionAssert.AreEqual(Enumerable.Range(0, heads.Length).Select(h => k.Skip(h * d).Take(d).Max() / 448f).ToArray(), heads);
    }

    /// <summary>
    /// The GenAI builder bakes a rotary table of 128 rows (the zoo's max_position_embeddings): 300 calibration tokens
    /// (the default is 256) once failed inside ORT's GroupQueryAttention ("cos_cache dimension 0 shall not be less than
    /// total_sequence_length"). They run as sequences of 128, 128 and 44 from empty caches: the absmax is the largest of
    /// the three runs'.
    /// </summary>
    [TestMethod]
    public void CalibrationLongerThanTheModelsPositionsRunsInSequencesOfThatLength()
    {
        var source = ZooFixtures.Model("llama-gqa");
        var tokens = QuantizedZooTests.Tokens(seed: 3, count: 300);
        var whole = KvCalibrator.Run(source, tokens, "t");
        Assert.AreEqual(300, whole.Tokens);
        var parts = new[] { tokens[..128], tokens[128..256], tokens[256..] }.Select(t => KvCalibrator.Run(source, t, "t")).ToArray();
        foreach (var layer in whole.Layers)
            foreach (var kv in new Func<(float[] Key, float[] Value), float[]>[] { c => c.Key, c => c.Value })
            {
                var expected = Enumerable.Range(0, kv(whole.AbsMax(layer)!.Value).Length).Select(i => parts.Max(p => kv(p.AbsMax(layer)!.Value)[i])).ToArray();
                CollectionAssert.AreEqual(expected, kv(whole.AbsMax(layer)!.Value), $"layer {layer}");
            }
        Assert.IsTrue(parts.Skip(1).Any(p => !kv0(p).SequenceEqual(kv0(parts[0]))), "the parts must differ (else the max proves nothing)");
        static float[] kv0(KvCalibration c) => c.AbsMax(c.Layers.First())!.Value.Key;
    }

    [TestMethod]
    public void KvBytesOfInt8AreAQuarterOfFp32AndHalfOfFp16()
    {
        var config = new SessionConfig { MaxBatch = 2, MaxLength = 32, PrefillChunk = 4 };
        SessionKvMemory Memory(string model)
        {
            using var m = MixAttentionModel.Open(model, new ModelOptions { IntraOpNumThreads = 1 });
            using var s = m.CreateSession(config);
            return s.Memory();
        }
        foreach (var layout in new[] { "native", "0_0" })
        {
            var fp32 = Memory(Convert(Source, layout: layout, dtype: "auto"));
            var int8 = Memory(Convert(Source, layout: layout));
            Assert.AreEqual(fp32.AllocatedBytes, 4 * int8.AllocatedBytes);
            Assert.AreEqual(fp32.BytesPerSequence, 4 * int8.BytesPerSequence);
            Assert.AreEqual(fp32.UnconvertedBytesPerSequence, int8.UnconvertedBytesPerSequence, "the unconverted model keeps fp32 caches");
            Assert.AreEqual(int8.AllocatedBytes, int8.AllocatedBytesByDType["int8"]);
            Assert.AreEqual(fp32.AllocatedBytes, fp32.AllocatedBytesByDType["fp32"]);
        }
        var fp16Source = TestPaths.Fixture("qwen35-gqa-fp16");
        var half = Memory(Convert(fp16Source, dtype: "auto", backend: "ort-gqa"));
        var quarter = Memory(Convert(fp16Source, backend: "ort-gqa"));
        Assert.AreEqual(half.AllocatedBytes, 2 * quarter.AllocatedBytes);
        Assert.AreEqual(half.AllocatedBytes, half.AllocatedBytesByDType["fp16"]);
    }

    [TestMethod]
    public void InspectShowsDTypeAndBytesPerCache()
    {
        var fp32 = Convert(Source, dtype: "auto");
        var int8 = Convert(Source);
        var (code, output, err) = InspectCliTests.Run("inspect", int8, "--json", "--context", "1024", "--batch", "1");
        Assert.AreEqual(0, code, err);
        var doc = JsonNode.Parse(output)!;
        var (code32, output32, err32) = InspectCliTests.Run("inspect", fp32, "--json", "--context", "1024", "--batch", "1");
        Assert.AreEqual(0, code32, err32);
        var doc32 = JsonNode.Parse(output32)!;
        var caches = doc["cache_plan"]!["caches"]!.AsArray();
        Assert.IsTrue(caches.All(c => c!["dtype"]!.GetValue<string>() == "int8"));
        long bytes = doc["kv_cache"]!["bytes"]!.GetValue<long>();
        Assert.AreEqual(doc32["kv_cache"]!["bytes"]!.GetValue<long>(), 4 * bytes);
        Assert.AreEqual(bytes, doc["kv_cache"]!["bytes_by_dtype"]!["int8"]!.GetValue<long>());
        var (_, text, _) = InspectCliTests.Run("inspect", int8, "--context", "1024", "--batch", "1");
        StringAssert.Contains(text, "int8");
    }

    [TestMethod]
    [DataRow("dtype", "\"int8\"", "scales", null, "names no scales")]
    [DataRow("dtype", "\"fp32\"", "scales", "{\"granularity\":\"tensor\",\"key\":\"a\",\"value\":\"b\"}", "not quantized")]
    [DataRow("scales", "{\"granularity\":\"row\",\"key\":\"a\",\"value\":\"b\"}", null, null, "granularity")]
    [DataRow("scales", "{\"granularity\":\"tensor\",\"key\":\"a\",\"value\":\"a\"}", null, null, "both")]
    [DataRow("scales", "{\"granularity\":\"tensor\",\"key\":\"\",\"value\":\"b\"}", null, null, "key scales")]
    [DataRow("scales", "{\"granularity\":\"tensor\",\"value\":\"b\"}", null, null, "scales.key")]
    [DataRow("scales", "[1]", null, null, "not an object")]
    [DataRow("scales", "{\"granularity\":7,\"key\":\"a\",\"value\":\"b\"}", null, null, "malformed")]
    [DataRow("storage", "\"uint8\"", null, null, "only fp8e4m3 caches")]
    [DataRow("storage", "\"float\"", null, null, "only fp8e4m3 caches")]
    public void HostileQuantizationFieldsAreRefused(string field, string? value, string? field2, string? value2, string words)
    {
        var converted = Convert(Source);
        var path = HostilePlanTests.Tampered(converted, p =>
        {
            var c = p["caches"]![0]!.AsObject();
            void Set(string f, string? v) { if (v is null) c.Remove(f); else c[f] = JsonNode.Parse(v); }
            Set(field, value);
            if (field2 is not null) Set(field2, value2);
        });
        var e = Assert.ThrowsExactly<MixAttentionException>(() => CachePlan.FromModel(ModelProto.Parser.ParseFrom(File.ReadAllBytes(path))));
        StringAssert.Contains(e.Message, words);
        var (code, _, err) = InspectCliTests.Run("bench", path, "--context", "16", "--steps", "1", "--batch", "1");
        Assert.AreEqual(2, code, err);
    }

    [TestMethod]
    public void HostileVersionsAndModelDTypeAreRefused()
    {
        var converted = Convert(Source);
        foreach (var (edit, words) in new (Action<JsonObject>, string)[]
        {
            (p => p["version"] = CachePlan.CurrentVersion + 1, $"version {CachePlan.CurrentVersion + 1}"),
            (p => p["version"] = 1, "version-1 plan"),
            (p => p["model_dtype"] = "int8", "model_dtype"),
        })
        {
            var path = HostilePlanTests.Tampered(converted, edit);
            var e = Assert.ThrowsExactly<MixAttentionException>(() => CachePlan.FromModel(ModelProto.Parser.ParseFrom(File.ReadAllBytes(path))));
            StringAssert.Contains(e.Message, words);
        }
        // A plan whose dtype says int8 over a graph with fp32 caches is refused at open (the types must agree).
        var lie = HostilePlanTests.Tampered(Convert(Source, dtype: "auto"), p =>
        {
            p["version"] = 2;
            var c = p["caches"]![0]!.AsObject();
            c["dtype"] = "int8";
            c["scales"] = JsonNode.Parse("{\"granularity\":\"tensor\",\"key\":\"a\",\"value\":\"b\"}");
        });
        var open = Assert.ThrowsExactly<MixAttentionException>(() => MixAttentionModel.Open(lie));
        StringAssert.Contains(open.Message, "int8");
    }
}
