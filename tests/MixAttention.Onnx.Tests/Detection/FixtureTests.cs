using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Detection;

/// <summary>The fixtures themselves are right: each unconverted export, decoded incrementally on ORT, gives the torch logits recorded at export time.</summary>
[TestClass]
public sealed class FixtureTests
{
    public static IEnumerable<object[]> FixturesWithTorchReference() =>
        TestPaths.FixtureDirectories()
            .Where(d => File.Exists(Path.Combine(d, "provenance.json")) && File.ReadAllText(Path.Combine(d, "provenance.json")).Contains("\"reference\""))
            .Select(d => new object[] { Path.GetFileName(d) });

    [TestMethod]
    [DynamicData(nameof(FixturesWithTorchReference))]
    public void UnconvertedFixtureMatchesTorch(string fixture)
    {
        var reference = TorchReference.For(fixture);
        using var runner = new DecoderRunner(TestPaths.Fixture(fixture));
        // ORT's GQA takes several tokens with past context only at batch 1: decode the GQA fixtures one token at a time.
        var logits = runner.Run(reference.InputIds, reference.Batch, reference.Length, prefill: fixture.Contains("gqa") ? 1 : 5);
        var max = Compare.MaxAbsDiff(logits, reference.Logits);
        Assert.IsLessThanOrEqualTo(1e-4f, max, $"{fixture}: max |Δ| vs torch = {max}");
    }
}
