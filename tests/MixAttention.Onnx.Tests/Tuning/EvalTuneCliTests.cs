using System.Text.Json.Nodes;
using MixAttention.Onnx.Tests.Cli;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Tuning;

/// <summary>`mixattn eval` and `mixattn tune` as processes, and the retrofit count of `convert`.</summary>
[TestClass]
public sealed class EvalTuneCliTests
{
    private static string TokensFile()
    {
        var path = Path.Combine(TestPaths.TempDir(), "ids.txt");
        File.WriteAllText(path, string.Join(' ', EvaluationTests.Text(128)));
        return path;
    }

    /// <summary>tune writes a layout file that convert takes; eval of that conversion reports the KL tune measured.</summary>
    [TestMethod]
    [TestCategory("Slow")] // four CLI processes, 5 s
    public void TuneWritesALayoutConvertTakesAndEvalAgrees()
    {
        var source = ZooFixtures.Model("gemma3_text-dynamo");
        var dir = TestPaths.TempDir();
        var layout = Path.Combine(dir, "tuned.json");
        var ids = TokensFile();
        var (code, stdout, stderr) = InspectCliTests.Run("tune", source, "--tokens", ids, "--budget", "50%", "--window", "4", "--window", "8", "--context", "64", "-o", layout, "--json");
        Assert.AreEqual(0, code, stderr);
        var doc = JsonNode.Parse(stdout)!;
        Assert.IsLessThanOrEqualTo(doc["budget_bytes"]!.GetValue<long>(), doc["chosen"]!["kv_bytes_per_sequence"]!.GetValue<long>());
        Assert.IsTrue(File.Exists(layout));
        var converted = Path.Combine(dir, "tuned", "model.onnx");
        (code, _, stderr) = InspectCliTests.Run("convert", source, "-o", converted, "--layout", layout, "--check", "none");
        Assert.AreEqual(0, code, stderr);
        var svg = Path.Combine(dir, "kl.svg");
        (code, stdout, stderr) = InspectCliTests.Run("eval", source, converted, "--tokens", ids, "--context", "64", "--json", "--plot", svg);
        Assert.AreEqual(0, code, stderr);
        var eval = JsonNode.Parse(stdout)!["models"]!.AsArray();
        Assert.AreEqual(doc["chosen"]!["layout"]!.GetValue<string>(), eval[1]!["layout"]!.GetValue<string>());
        Assert.AreEqual(doc["chosen"]!["quality"]!["mean_kl"]!.GetValue<double>(), eval[1]!["mean_kl"]!.GetValue<double>(), 1e-6);
        StringAssert.Contains(File.ReadAllText(svg), "<polyline");
    }

    /// <summary>
    /// Below the model's own KV (native keeps 80 of 192 slots: 42 %) every layout is a retrofit with KL > 0: over
    /// --max-kl the exit code is 1 and nothing is written; with a limit it meets, it writes.
    /// </summary>
    [TestMethod]
    [TestCategory("Slow")] // two tune processes, 5 s
    public void OverTheKlLimitExitsOneAndWritesNothing()
    {
        var source = ZooFixtures.Model("gemma3_text-dynamo");
        var layout = Path.Combine(TestPaths.TempDir(), "tuned.json");
        var ids = TokensFile();
        var (code, stdout, stderr) = InspectCliTests.Run("tune", source, "--tokens", ids, "--budget", "0.3", "--window", "4", "--context", "64", "--max-kl", "1e-9", "-o", layout);
        Assert.AreEqual(1, code, stderr);
        StringAssert.Contains(stdout, "over the KL limit");
        Assert.IsFalse(File.Exists(layout));
        (code, _, stderr) = InspectCliTests.Run("tune", source, "--tokens", ids, "--budget", "0.3", "--window", "4", "--context", "64", "--max-kl", "10", "-o", layout);
        Assert.AreEqual(0, code, stderr);
        Assert.IsTrue(File.Exists(layout));
    }

    [TestMethod]
    public void InputErrorsExitTwo()
    {
        var source = ZooFixtures.Model("gemma3_text-dynamo");
        var ids = TokensFile();
        foreach (var args in new[]
        {
            new[] { "eval", source },                                               // no text
            new[] { "eval", source, "--tokens", ids, "--text", ids },               // both
            new[] { "eval", source, "--tokens", ids + ".missing" },
            new[] { "eval", source, "--tokens", ids, "--plot", "kl.png" },
            new[] { "tune", source, "--tokens", ids, "--budget", "lots" },
            new[] { "tune", source, "--tokens", ids, "--budget", "0.5", "--window", "0" },
            new[] { "tune", source, "--tokens", ids, "--budget", "16B" },          // nothing fits
        })
        {
            var (code, _, err) = InspectCliTests.Run(args);
            Assert.AreEqual(2, code, $"mixattn {string.Join(' ', args)}: {err}");
            StringAssert.StartsWith(err.Trim(), "error:");
        }
        var bad = Path.Combine(TestPaths.TempDir(), "bad.txt");
        File.WriteAllText(bad, "1 2 x");
        Assert.AreEqual(2, InspectCliTests.Run("eval", source, "--tokens", bad).Code);
    }

    /// <summary>
    /// Where eval's plot and tune's layout go, and the numbers the run needs, are checked before the run (a typo costs
    /// seconds, not the run): exit 2, one line naming the flag, and nothing written.
    /// </summary>
    [TestMethod]
    public void OutputPathsAndRangesFailBeforeTheRun()
    {
        var source = ZooFixtures.Model("gemma3_text-dynamo");
        var ids = TokensFile();
        var dir = TestPaths.TempDir();
        var missing = Path.Combine(dir, "no-such-folder");
        foreach (var (args, words) in new[]
        {
            (new[] { "eval", source, "--tokens", ids, "--context", "64", "--plot", Path.Combine(missing, "kl.svg") }, "--plot"),
            (new[] { "eval", source, "--tokens", ids, "--context", "64", "--plot", Path.Combine(dir, "folder.svg") }, "is a folder"),
            (new[] { "tune", source, "--tokens", ids, "--budget", "0.5", "--window", "4", "--context", "64", "-o", Path.Combine(missing, "tuned.json") }, "--output"),
            (new[] { "eval", source, "--tokens", ids, "--prefill-chunk", "0" }, "--prefill-chunk"),
            (new[] { "eval", source, "--tokens", ids, "--buckets", "0" }, "--buckets"),
            (new[] { "tune", source, "--tokens", ids, "--budget", "0.5", "--window", "4", "--beam", "0" }, "--beam"),
            (new[] { "tune", source, "--tokens", ids, "--budget", "0.5", "--window", "4", "--finalists", "0" }, "--finalists"),
            (new[] { "tune", source, "--tokens", ids, "--budget", "0.5", "--window", "4", "--share-distance", "-1" }, "--share-distance"),
        })
        {
            Directory.CreateDirectory(Path.Combine(dir, "folder.svg"));
            var (code, _, err) = InspectCliTests.Run(args);
            var cmd = $"mixattn {string.Join(' ', args)}: {err}";
            Assert.AreEqual(2, code, cmd);
            Assert.HasCount(1, err.Split('\n', StringSplitOptions.RemoveEmptyEntries), cmd);
            StringAssert.StartsWith(err.Trim(), "error:", cmd);
            StringAssert.Contains(err, words, cmd);
            Assert.IsFalse(Directory.Exists(missing), cmd);
            CollectionAssert.AreEquivalent(new[] { Path.Combine(dir, "folder.svg") }, Directory.GetFileSystemEntries(dir), cmd);
        }
    }

    /// <summary>
    /// Issue 20: the retrofit line counts layers, not notes. Gemma-3 (0s8_1s8_2) as `cai` (0_1s8_1s8): layer 0 becomes
    /// global (one note), layer 2 slides and reads layer 1 (two notes), layer 1 is unchanged: 2 layers, 3 notes.
    /// </summary>
    [TestMethod]
    public void RetrofitLineCountsLayers()
    {
        var output = Path.Combine(TestPaths.TempDir(), "model.onnx");
        var (code, stdout, stderr) = InspectCliTests.Run("convert", ZooFixtures.Model("gemma3_text-dynamo"), "-o", output, "--layout", "cai", "--check", "none");
        Assert.AreEqual(0, code, stderr);
        StringAssert.Contains(stdout, "retrofit: 2 layer(s) attend differently");
    }
}
