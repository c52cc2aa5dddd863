using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Plan;
using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Quantization;

/// <summary>
/// fp8 caches with the ops backend, through the product runtime: ORT 1.31's C# API cannot open a graph with
/// float8e4m3fn inputs, so the ops backend declares fp8 caches as the op's uint8 alias (the same E4M3FN bytes,
/// docs/ops.md; plan <c>"storage": "uint8"</c>). Logits stay close to the fp32-cache model's; the caches take one byte
/// per element.
/// </summary>
[TestClass]
public sealed class Fp8OpsTests
{
    public TestContext TestContext { get; set; } = null!;

    [TestMethod]
    [DataRow("llama-gqa", "native")]
    [DataRow("mistral-dynamo", "cai")]
    [DataRow("gemma3_text-dynamo", "cai")]
    public void Fp8OpsLogitsStayCloseToFloatCaches(string name, string layout)
    {
        var tokens = QuantizedZooTests.Tokens(seed: 11, count: 48);
        var fp32 = QuantizedDecode.Logits(QuantizedZooTests.Convert(name, layout, "ops", "auto"), tokens);
        foreach (var granularity in new[] { "tensor", "channel" })
        {
            var converted = QuantizedZooTests.Convert(name, layout, "ops", "fp8", granularity);
            var plan = CachePlan.FromModel(OnnxModel.Load(converted).Proto)!;
            Assert.IsTrue(plan.Caches.All(c => c.DType == "fp8e4m3" && c.Storage == "uint8"));
            var fp8 = QuantizedDecode.Logits(converted, tokens);
            var diff = QuantizedDecode.MaxAbsDiff(fp8, fp32);
            var top1 = QuantizedDecode.Top1Agreement(fp8, fp32);
            TestContext.WriteLine($"{name} {layout} fp8 per {granularity} vs fp32 caches: max |Δlogit| {diff:0.000}, top-1 agreement {top1:P1} over {tokens.Length} positions");
            Assert.IsLessThanOrEqualTo(0.5f, diff, $"{name} {layout} fp8 per {granularity}: max |Δlogit| {diff}");
            Assert.IsGreaterThanOrEqualTo(0.85, top1, $"{name} {layout} fp8 per {granularity}: top-1 {top1}");
        }
    }

    [TestMethod]
    public void Fp8CachesTakeAQuarterOfFp32()
    {
        var config = new SessionConfig { MaxBatch = 2, MaxLength = 32, PrefillChunk = 4 };
        SessionKvMemory Memory(string model)
        {
            using var m = MixAttentionModel.Open(model, new ModelOptions { IntraOpNumThreads = 1 });
            using var s = m.CreateSession(config);
            return s.Memory();
        }
        var fp32 = Memory(QuantizedZooTests.Convert("mistral-dynamo", "cai", "ops", "auto"));
        var fp8 = Memory(QuantizedZooTests.Convert("mistral-dynamo", "cai", "ops", "fp8"));
        Assert.AreEqual(fp32.AllocatedBytes, 4 * fp8.AllocatedBytes);
        Assert.AreEqual(fp8.AllocatedBytes, fp8.AllocatedBytesByDType["fp8e4m3"]);
    }
}
