using MixAttention.Onnx.Tests.Runtime;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Cli;

/// <summary>
/// docs/cli.md: every failure the input causes exits 2 with one line on stderr; 3 is for our bugs. Each case is one
/// that exited 3, crashed, or was accepted before (issue 22 case 9).
/// </summary>
[TestClass]
public sealed class ExitCodeTests
{
    private static string Converted => RuntimeFixtures.Convert("llama-gqa");
    private static string Original => TestPaths.Fixture("llama-gqa");

    private static void ExitsTwo(params string[] args)
    {
        var (code, _, err) = InspectCliTests.Run(args);
        Assert.AreEqual(2, code, $"mixattn {string.Join(' ', args)}: {err}");
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.HasCount(1, lines, err);
        StringAssert.StartsWith(lines[0], "error:");
    }

    /// <summary>A NUL cannot pass through argv, but it can through a response file (@file) or the library API.</summary>
    [TestMethod]
    public void NulInAPath()
    {
        var dir = TestPaths.TempDir();
        var rsp = Path.Combine(dir, "args.rsp");
        File.WriteAllText(rsp, $"convert\n{Original}\n-o\n{Path.Combine(dir, "o\0ut.onnx")}\n");
        ExitsTwo("@" + rsp);
        File.WriteAllText(rsp, $"inspect\n{Original}\0x\n");
        ExitsTwo("@" + rsp);
        Assert.Throws<MixAttentionException>(() => MixAttention.Onnx.Onnx.OnnxModel.Load(Original + "\0x"));
        Assert.Throws<MixAttentionException>(() => MixAttention.Onnx.Conversion.Converter.Convert(Original, Path.Combine(dir, "a\0b.onnx"), new() { Layout = "native" }));
        Assert.Throws<MixAttentionException>(() => MixAttention.Onnx.Runtime.MixAttentionModel.Open(Converted + "\0x"));
    }

    [TestMethod]
    public void EmptyOrUnwritableOutput()
    {
        ExitsTwo("convert", Original, "-o", "");
        var file = Path.Combine(TestPaths.TempDir(), "plain-file");
        File.WriteAllText(file, "x");
        ExitsTwo("convert", Original, "-o", Path.Combine(file, "model.onnx"));
        if (Directory.Exists("/proc/self")) ExitsTwo("convert", Original, "-o", "/proc/self/model.onnx");
    }

    [TestMethod]
    public void VerifyOptionsOutOfRange()
    {
        ExitsTwo("verify", Original, Converted, "--steps", "-1");
        ExitsTwo("verify", Original, Converted, "--batch", "0");
        ExitsTwo("verify", Original, Converted, "--batch", "2000000000", "--steps", "4");
        ExitsTwo("verify", Original, Converted, "--cuda-graph");
        ExitsTwo("verify", Original, Converted, "--device", "tpu");
        ExitsTwo("verify", Original, Converted, "--prefill-chunk", "0");
    }

    [TestMethod]
    public void GenerateSamplingNaN()
    {
        ExitsTwo("generate", Converted, "--tokenizer", Path.Combine(TestPaths.Graphs, "demo"), "--prompt", "hi", "--temperature", "NaN", "--max-new", "2");
        ExitsTwo("generate", Converted, "--tokenizer", Path.Combine(TestPaths.Graphs, "demo"), "--prompt", "hi", "--temperature", "0.5", "--top-p", "NaN", "--max-new", "2");
    }

    [TestMethod]
    public void BenchNegativeBudget() => ExitsTwo("bench", Converted, "--context", "8", "--steps", "1", "--budget-gib", "-1");

    [TestMethod]
    public void InspectSizesThatOverflow() => ExitsTwo("inspect", Original, "--context", "2147483647", "--batch", "2147483647");

    [TestMethod]
    public void OrtRejectingAHostileModel()
    {
        // A converted model whose graph ORT refuses to load (an op's input renamed to a value nothing produces).
        var path = Reliability.HostilePlanTests.Tampered(Converted, _ => { }, g => g.Node[g.Node.Count / 2].Input[0] = "nothing_produces_this");
        ExitsTwo("bench", path, "--context", "8", "--steps", "1");
        ExitsTwo("verify", Original, path, "--steps", "1");
    }

    [TestMethod]
    public void PlanWithWrongJsonTypes()
    {
        var path = Reliability.HostilePlanTests.Tampered(Converted, p => p["caches"]![0]!["head_size"] = "sixteen");
        ExitsTwo("bench", path, "--context", "8", "--steps", "1");
    }
}
