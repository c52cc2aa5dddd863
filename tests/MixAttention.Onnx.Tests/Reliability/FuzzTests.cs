using System.Diagnostics;
using CsCheck;
using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Graph;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Reliability;

/// <summary>
/// Mutation fuzzing of the model loader, the graph layer, detection and conversion: every mutated model must
/// either work or fail with a <see cref="MixAttentionException"/> (one clear message), never any other
/// exception and never hang. CI runs a short pass; MIXATTN_FUZZ_ITERATIONS=100000 runs the long one
/// (docs/reliability.md).
/// </summary>
[TestClass]
public sealed class FuzzTests
{
    private static int Iterations(int ci) =>
        int.TryParse(Environment.GetEnvironmentVariable("MIXATTN_FUZZ_ITERATIONS"), out var n) && n > 0 ? n : ci;

    /// <summary>One mutation of a byte array: flip, overwrite with a varint-ish value, truncate, insert, duplicate a slice.</summary>
    private static readonly Gen<(int Kind, int Position, int Length, byte Value)> Mutation =
        Gen.Select(Gen.Int[0, 4], Gen.Int[0, int.MaxValue], Gen.Int[1, 64], Gen.Byte);

    private static byte[] Mutate(byte[] seed, (int Kind, int Position, int Length, byte Value)[] mutations)
    {
        var bytes = seed.ToList();
        foreach (var (kind, position, length, value) in mutations)
        {
            if (bytes.Count == 0) break;
            int p = position % bytes.Count;
            switch (kind)
            {
                case 0: bytes[p] ^= (byte)(1 << (value % 8)); break;
                case 1: bytes[p] = value; break;
                case 2: bytes.RemoveRange(p, bytes.Count - p); break;
                case 3: bytes.InsertRange(p, Enumerable.Repeat(value, length)); break;
                case 4: bytes.InsertRange(p, bytes.Skip(p).Take(length).ToArray()); break;
            }
        }
        return bytes.ToArray();
    }

    private static void LoadDetectConvert(byte[] bytes)
    {
        var clock = Stopwatch.StartNew();
        try
        {
            var model = OnnxModel.Parse(bytes);
            var graph = new ModelGraph(model);
            var report = AttentionDetector.Detect(graph, ModelConfig.Empty);
            if (report.Sites.Count > 0 && report.Sites.All(s => s.Cache is not null))
                Converter.ConvertInMemory(model, ModelConfig.Empty, new ConversionOptions { Layout = "native", Window = 8 });
        }
        catch (MixAttentionException)
        {
            // the one acceptable failure: a clear message
        }
        Assert.IsLessThan(10.0, clock.Elapsed.TotalSeconds, "a single input took over 10 s: possible hang");
    }

    [TestMethod]
    [TestCategory("Slow")]
    [DataRow("llama-torchscript")]
    [DataRow("mistral-gqa")]
    [DataRow("gpt2-ortattention")]
    [DataRow("llama-dynamo")]
    public void MutatedModelsLoadOrFailCleanly(string fixture)
    {
        var seed = File.ReadAllBytes(TestPaths.Fixture(fixture));
        // Mutations near the front hit the graph structure (nodes, names, shapes) rather than weight bytes.
        var structural = Gen.Select(Gen.Int[0, 4], Gen.Int[0, Math.Min(seed.Length, 60_000)], Gen.Int[1, 64], Gen.Byte);
        Gen.OneOf(structural, Mutation).Array[1, 4]
            .Sample(m => LoadDetectConvert(Mutate(seed, m)), iter: Iterations(400), threads: 1);
    }

    [TestMethod]
    public void RandomBytesFailCleanly() =>
        Gen.Byte.Array[0, 512].Sample(bytes => LoadDetectConvert(bytes), iter: Iterations(2000), threads: 1);
}
