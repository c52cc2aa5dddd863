using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Plan;
using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Quantization;

/// <summary>
/// Zoo exports converted with int8 and fp8 KV caches (issue 18): the reference backend (plain ONNX: quantize on write,
/// dequantize on read) and ORT's own quantized GroupQueryAttention agree up to fp32 rounding with the same scales, and
/// quantized logits stay close to the float model's (bounds measured, printed with top-1 agreement).
/// </summary>
[TestClass]
public sealed class QuantizedZooTests
{
    public TestContext TestContext { get; set; } = null!;

    /// <summary>The exports the quantized tests run on: GQA builder, dynamo and TorchScript, with and without windows.</summary>
    public static IEnumerable<object[]> Models() => new[] { "llama-gqa", "mistral-dynamo", "qwen3-torchscript-p5", "gemma3_text-dynamo" }.Select(n => new object[] { n });

    private static readonly Dictionary<string, KvCalibration> Calibrations = new();
    private static readonly Lock Gate = new();

    /// <summary>One calibration per export (64 seeded random tokens), shared by every backend so their scales are equal.</summary>
    internal static KvCalibration Calibration(string name)
    {
        lock (Gate)
        {
            if (!Calibrations.TryGetValue(name, out var c))
                Calibrations[name] = c = KvCalibrator.Run(ZooFixtures.Model(name), Tokens(seed: 7, count: 64), "64 random tokens");
            return c;
        }
    }

    internal static long[] Tokens(int seed, int count, int vocab = 90)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (long)rng.Next(0, vocab)).ToArray();
    }

    internal static string Convert(string name, string layout, string backend, string dtype, string granularity = "channel", int? window = null) =>
        ZooFixtures.Convert(ZooFixtures.Model(name), layout, backend, window, o => o with
        {
            KvDType = dtype,
            KvScaleGranularity = KvScaleTensors.Parse(granularity)!.Value,
            Calibration = Calibration(name),
        });

    [TestMethod]
    [DynamicData(nameof(Models))]
    public void ReferenceEqualsOrtGqaWithInt8Caches(string name)
    {
        var tokens = Tokens(seed: 3, count: 40);
        foreach (var granularity in new[] { "tensor", "head", "channel" })
        {
            var reference = QuantizedDecode.Logits(Convert(name, "native", "reference", "int8", granularity), tokens);
            var gqa = QuantizedDecode.Logits(Convert(name, "native", "ort-gqa", "int8", granularity), tokens);
            var diff = QuantizedDecode.MaxAbsDiff(reference, gqa);
            TestContext.WriteLine($"{name} int8 per {granularity}: reference vs ort-gqa max |Δlogit| = {diff:0.0e0}");
            Assert.IsLessThanOrEqualTo(1e-4f, diff, $"{name} per {granularity}: reference vs ort-gqa max |Δ| = {diff}");
        }
    }
}
