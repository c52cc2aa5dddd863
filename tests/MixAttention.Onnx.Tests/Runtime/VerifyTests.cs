using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Runtime;

[TestClass]
public sealed class VerifyTests
{
    /// <summary>SWA-trained fixtures with the native layout are exact (3× the window of decode steps, batch 2).</summary>
    [TestMethod]
    [DataRow("mistral-torchscript")]
    [DataRow("mistral-gqa")]
    [DataRow("gemma3-dynamo")]
    public void NativeLayoutOfSwaFixturesIsExact(string fixture)
    {
        var report = ModelComparison.Verify(TestPaths.Fixture(fixture), RuntimeFixtures.Convert(fixture), new VerifyOptions { Batch = 2 });
        Assert.AreEqual(16, report.Window);
        Assert.HasCount(49, report.Steps);
        Assert.IsTrue(report.Exact, $"{fixture}: max |Δ| {report.MaxAbsDiff}");
        Assert.IsLessThan(report.Original.BytesPerSequence, report.Converted.BytesPerSequence);
    }

    /// <summary>A retrofit (windows and sharing on a model not trained for them) is reported as divergent.</summary>
    [TestMethod]
    public void RetrofitIsReportedAsDivergent()
    {
        var report = ModelComparison.Verify(TestPaths.Fixture("llama-torchscript"), RuntimeFixtures.Convert("llama-torchscript", "0s_0s", 4), new VerifyOptions { Steps = 20 });
        Assert.IsFalse(report.Exact);
        Assert.IsGreaterThan(1e-2f, report.MaxAbsDiff);
        Assert.IsGreaterThan(0.0, report.MaxKl);
    }

    /// <summary>The CLI (as a process): exit 0 on an exact pair with --expect-exact, 1 on a retrofit; demo runs with no arguments.</summary>
    [TestMethod]
    [TestCategory("Slow")]
    public void CliVerifyExitCodesAndDemo()
    {
        var (code, stdout, stderr) = Cli.InspectCliTests.Run("verify", TestPaths.Fixture("mistral-torchscript"), RuntimeFixtures.Convert("mistral-torchscript"), "--expect-exact", "--steps", "20", "--json");
        Assert.AreEqual(0, code, stderr);
        StringAssert.Contains(stdout, "\"exact\": true");
        (code, _, stderr) = Cli.InspectCliTests.Run("verify", TestPaths.Fixture("llama-torchscript"), RuntimeFixtures.Convert("llama-torchscript", "0s_0s", 4), "--expect-exact", "--steps", "20");
        Assert.AreEqual(1, code, stderr);
        (code, stdout, stderr) = Cli.InspectCliTests.Run("demo", "--graphs", TestPaths.Graphs, "--max-new", "12");
        Assert.AreEqual(0, code, stderr);
        StringAssert.Contains(stdout, "native");
        StringAssert.Contains(stdout, "all", "the native conversion generates the original's tokens");
    }
}
