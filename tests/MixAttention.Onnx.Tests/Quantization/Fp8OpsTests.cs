using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Plan;
using MixAttention.Onnx.Runtime.Native;
using MixAttention.Onnx.Tests.Reliability;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Quantization;

/// <summary>
/// fp8 caches with the ops backend. ORT 1.31's C# API cannot open a graph with float8e4m3fn inputs, so the converted
/// model is retyped here to the op's uint8 alias (the same E4M3FN bytes, docs/ops.md) and run by a plain ORT loop:
/// the converter's fp8 wiring (scales into owners and readers, cache types) runs, and its logits stay close to the
/// fp32-cache model's.
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
            Assert.IsTrue(plan.Caches.All(c => c.DType == "fp8e4m3"));
            var names = plan.Caches.SelectMany(c => new[] { c.PastKey, c.PastValue, c.PresentKey, c.PresentValue }).ToHashSet();
            var retyped = HostilePlanTests.Tampered(converted, _ => { }, g =>
            {
                foreach (var v in g.Input.Concat(g.Output).Where(v => names.Contains(v.Name))) v.Type.TensorType.ElemType = 2; // uint8
            });
            var fp8 = Run(retyped, plan, tokens, prefill: 5);
            var diff = QuantizedDecode.MaxAbsDiff(fp8, fp32);
            var top1 = QuantizedDecode.Top1Agreement(fp8, fp32);
            TestContext.WriteLine($"{name} {layout} fp8 per {granularity} vs fp32 caches: max |Δlogit| {diff:0.000}, top-1 agreement {top1:P1} over {tokens.Length} positions");
            Assert.IsLessThanOrEqualTo(0.5f, diff, $"{name} {layout} fp8 per {granularity}: max |Δlogit| {diff}");
            Assert.IsGreaterThanOrEqualTo(0.85, top1, $"{name} {layout} fp8 per {granularity}: top-1 {top1}");
        }
    }

    /// <summary>Prefill, then one token at a time; uint8 caches of capacity T (global) or the plan's ring, fed back from the presents.</summary>
    private static float[][] Run(string model, CachePlan plan, long[] tokens, int prefill)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 1 };
        options.RegisterCustomOpLibrary(NativeLibraryPath.GetRequired());
        using var session = new InferenceSession(model, options);
        var caches = new Dictionary<string, DenseTensor<byte>>();
        foreach (var c in plan.Caches)
        {
            int capacity = c.Capacity == CapacityRule.Window ? c.Window + (c.Readers.Count > 0 ? prefill - 1 : 0) : tokens.Length;
            foreach (var n in new[] { c.PastKey, c.PastValue }) caches[n] = new DenseTensor<byte>(new[] { 1, c.KvNumHeads, capacity, c.HeadSize });
        }
        var rows = new List<float[]>();
        for (int done = 0; done < tokens.Length;)
        {
            int s = done == 0 ? prefill : 1;
            var inputs = new List<NamedOnnxValue>
            {
                NamedOnnxValue.CreateFromTensor(plan.InputIds, new DenseTensor<long>(tokens[done..(done + s)], new[] { 1, s })),
                NamedOnnxValue.CreateFromTensor(plan.PastLengths!, new DenseTensor<int>(new[] { done }, new[] { 1 })),
                NamedOnnxValue.CreateFromTensor(plan.NewLengths!, new DenseTensor<int>(new[] { s }, new[] { 1 })),
            };
            if (plan.PositionIds is { } pos)
                inputs.Add(NamedOnnxValue.CreateFromTensor(pos, new DenseTensor<long>(Enumerable.Range(done, s).Select(i => (long)i).ToArray(), new[] { 1, s })));
            inputs.AddRange(caches.Select(kv => NamedOnnxValue.CreateFromTensor(kv.Key, kv.Value)));
            using var results = session.Run(inputs);
            var logits = (DenseTensor<float>)results.First(r => r.Name == plan.Logits).Value;
            int vocab = logits.Dimensions[2];
            for (int i = 0; i < s; i++) rows.Add(Enumerable.Range(0, vocab).Select(v => logits[0, i, v]).ToArray());
            foreach (var c in plan.Caches)
            {
                caches[c.PastKey] = (DenseTensor<byte>)((DenseTensor<byte>)results.First(r => r.Name == c.PresentKey).Value).Clone();
                caches[c.PastValue] = (DenseTensor<byte>)((DenseTensor<byte>)results.First(r => r.Name == c.PresentValue).Value).Clone();
            }
            done += s;
        }
        return rows.ToArray();
    }
}
