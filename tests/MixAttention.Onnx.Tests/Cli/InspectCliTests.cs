using System.Diagnostics;
using System.Text.Json.Nodes;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Cli;

/// <summary>Runs the real mixattn executable as a user would.</summary>
[TestClass]
public sealed class InspectCliTests
{
    internal static (int Code, string Out, string Err) Run(params string[] args)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "mixattn.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(120_000)) { p.Kill(true); throw new TimeoutException("mixattn did not finish"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [TestMethod]
    public void JsonListsEveryLayerAndTheCacheSize()
    {
        var (code, stdout, stderr) = Run("inspect", TestPaths.Fixture("gemma3-torchscript"), "--context", "1024", "--batch", "2", "--json");
        Assert.AreEqual(0, code, stderr);
        var doc = JsonNode.Parse(stdout)!;
        var layers = doc["layers"]!.AsArray();
        Assert.HasCount(6, layers);
        Assert.AreEqual(16, layers[0]!["window"]!.GetValue<int>());
        Assert.AreEqual(0, layers[5]!["window"]!.GetValue<int>());
        // 6 layers × K and V × batch 2 × 2 kv heads × 1024 × 16 × 4 bytes
        Assert.AreEqual(6L * 2 * 2 * 2 * 1024 * 16 * 4, doc["kv_cache"]!["bytes_as_exported"]!.GetValue<long>());
        // Own windows: five layers keep 16 positions, one keeps 1024.
        Assert.AreEqual((5L * 16 + 1024) * 2 * 2 * 2 * 16 * 4, doc["kv_cache"]!["bytes_with_own_windows"]!.GetValue<long>());
    }

    [TestMethod]
    public void TableNamesEveryLayer()
    {
        var (code, stdout, _) = Run("inspect", TestPaths.Fixture("llama-dynamo"));
        Assert.AreEqual(0, code);
        StringAssert.Contains(stdout, "onnx-attention");
        StringAssert.Contains(stdout, "past_key_values.1.key");
    }

    [TestMethod]
    [TestCategory("Slow")]
    [DataRow("truncated")]
    [DataRow("text")]
    [DataRow("missing-data")]
    [DataRow("no-attention")]
    [DataRow("no-file")]
    public void BadInputGivesOneLineAndNonZeroExit(string kind)
    {
        var dir = TestPaths.TempDir();
        var path = Path.Combine(dir, "m.onnx");
        switch (kind)
        {
            case "truncated": File.WriteAllBytes(path, File.ReadAllBytes(TestPaths.Fixture("llama-gqa")).Take(3000).ToArray()); break;
            case "text": File.WriteAllText(path, "hello\n"); break;
            case "missing-data":
                MixAttention.Onnx.Onnx.OnnxModel.Load(TestPaths.Fixture("llama-gqa")).Save(path, new MixAttention.Onnx.Onnx.OnnxSaveOptions { ExternalizeAtLeastBytes = 1024 });
                File.Delete(path + ".data");
                break;
            case "no-attention":
                var m = new MixAttention.Onnx.Onnx.Proto.ModelProto { IrVersion = 10, Graph = new MixAttention.Onnx.Onnx.Proto.GraphProto() };
                m.OpsetImport.Add(new MixAttention.Onnx.Onnx.Proto.OperatorSetIdProto { Version = 21 });
                m.Graph.Node.Add(new MixAttention.Onnx.Onnx.Proto.NodeProto { OpType = "Relu", Input = { "x" }, Output = { "y" } });
                File.WriteAllBytes(path, Google.Protobuf.MessageExtensions.ToByteArray(m));
                break;
            case "no-file": path = Path.Combine(dir, "absent.onnx"); break;
        }
        var (code, _, stderr) = Run("inspect", path);
        Assert.AreNotEqual(0, code);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.HasCount(1, lines, stderr);
        StringAssert.StartsWith(lines[0], "error:");
        Assert.DoesNotContain("   at ", stderr, "no stack trace without --verbose");

        var (_, _, verbose) = Run("inspect", path, "--verbose");
        if (kind != "no-attention") StringAssert.Contains(verbose, "   at ", "--verbose shows the stack trace");
    }
}

[TestClass]
public sealed class BenchCliTests
{
    [TestMethod]
    [TestCategory("Slow")]
    public void BenchComparesModelsInOneRunAndReportsMemory()
    {
        var dir = TestPaths.TempDir();
        var converted = Path.Combine(dir, "native", "model.onnx");
        var (code, _, err) = InspectCliTests.Run("convert", TestPaths.Fixture("mistral-torchscript"), "-o", converted, "--layout", "native", "--json");
        Assert.AreEqual(0, code, err);
        (code, var stdout, err) = InspectCliTests.Run("bench", TestPaths.Fixture("mistral-torchscript"), converted, "--context", "40", "--batch", "2", "--steps", "4", "--json");
        Assert.AreEqual(0, code, err);
        var results = JsonNode.Parse(stdout)!["results"]!.AsArray();
        Assert.HasCount(2, results);
        Assert.AreEqual(1.0, results[0]!["speedup"]!.GetValue<double>(), 1e-9);
        Assert.IsGreaterThan(0.0, results[1]!["tokens_per_second"]!.GetValue<double>());
        foreach (var r in results) Assert.IsTrue(double.IsFinite(r!["prefill_tokens_per_second"]!.GetValue<double>()) && r["prefill_tokens_per_second"]!.GetValue<double>() > 0);
        // Window 16 ring vs a full cache of at least 44 positions per layer.
        Assert.IsLessThan(results[0]!["kv_bytes_per_sequence"]!.GetValue<long>(), results[1]!["kv_bytes_per_sequence"]!.GetValue<long>());
        foreach (var r in results) Assert.AreEqual("host", r!["logits"]!.GetValue<string>());

        // --device-logits: the converted model decodes with DecodeOnDevice, the unconverted one copies (and says so).
        (code, stdout, err) = InspectCliTests.Run("bench", TestPaths.Fixture("mistral-torchscript"), converted, "--context", "20", "--batch", "2", "--steps", "3", "--device-logits", "--json");
        Assert.AreEqual(0, code, err);
        results = JsonNode.Parse(stdout)!["results"]!.AsArray();
        Assert.AreEqual("host", results[0]!["logits"]!.GetValue<string>());
        Assert.AreEqual("device", results[1]!["logits"]!.GetValue<string>());
        StringAssert.Contains(err, "logits copied to the host");
    }

    [TestMethod]
    [TestCategory("Slow")]
    public void BenchRoundsInterleaveTheModelsAndReportMedians()
    {
        var dir = TestPaths.TempDir();
        var converted = Path.Combine(dir, "native", "model.onnx");
        var (code, _, err) = InspectCliTests.Run("convert", TestPaths.Fixture("mistral-torchscript"), "-o", converted, "--layout", "native", "--json");
        Assert.AreEqual(0, code, err);
        var started = DateTime.UtcNow;
        (code, var stdout, err) = InspectCliTests.Run("bench", TestPaths.Fixture("mistral-torchscript"), converted, "--context", "24", "--batch", "2", "--steps", "2", "--rounds", "3", "--json");
        Assert.AreEqual(0, code, err);
        var results = JsonNode.Parse(stdout)!["results"]!.AsArray();
        Assert.HasCount(2, results);
        double Median(double[] v) => v.Order().ElementAt(v.Length / 2);
        var baseline = results[0]!["decode_ms_per_step_rounds"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
        for (int m = 0; m < results.Count; m++) // without --rotate-order the given order, every round
            CollectionAssert.AreEqual(new[] { m, m, m }, results[m]!["round_positions"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray());
        foreach (var r in results)
        {
            Assert.AreEqual(3, r!["rounds"]!.GetValue<int>());
            var rounds = r["decode_ms_per_step_rounds"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
            Assert.HasCount(3, rounds);
            Assert.IsTrue(rounds.All(x => x > 0 && double.IsFinite(x)));
            Assert.AreEqual(Median(rounds), r["decode_ms_per_step"]!.GetValue<double>(), 1e-12);
            // The speedup is the median of the per-round ratios against the first model, not a ratio of medians.
            Assert.AreEqual(Median(baseline.Zip(rounds, (a, b) => a / b).ToArray()), r["speedup"]!.GetValue<double>(), 1e-12);
            // What the garbage collector did inside each round (a full collection ran before each one by default).
            Assert.IsTrue(r["collect_before_rounds"]!.GetValue<bool>());
            Assert.HasCount(0, r["graph_step_ms_rounds"]!.AsArray()); // CPU: no CUDA-graph steps to split into phases
            var gc = r["gc_rounds"]!.AsArray();
            Assert.HasCount(3, gc);
            foreach (var g in gc)
            {
                int g0 = g!["gen0"]!.GetValue<int>(), g1 = g["gen1"]!.GetValue<int>(), g2 = g["gen2"]!.GetValue<int>();
                Assert.IsTrue(g0 >= g1 && g1 >= g2 && g2 >= 0, $"collections {g0}/{g1}/{g2}");
                Assert.IsGreaterThanOrEqualTo(0.0, g["pause_ms"]!.GetValue<double>());
                Assert.IsGreaterThan(0L, g["allocated_bytes_per_step"]!.GetValue<long>()); // a step allocates something (its id arrays)
            }
            // When each round ran (UTC, round-trip format): ordered, each spanning its steps, and inside the test's own run.
            var windows = r["round_utc"]!.AsArray().Select(w => (Start: DateTime.Parse(w!["start"]!.GetValue<string>(), null, System.Globalization.DateTimeStyles.RoundtripKind),
                End: DateTime.Parse(w["end"]!.GetValue<string>(), null, System.Globalization.DateTimeStyles.RoundtripKind))).ToArray();
            Assert.HasCount(3, windows);
            var previousEnd = started;
            foreach (var (start, end) in windows)
            {
                Assert.AreEqual(DateTimeKind.Utc, start.Kind);
                Assert.IsTrue(previousEnd <= start && start < end && end <= DateTime.UtcNow, $"round window {start:O} .. {end:O} after {previousEnd:O}");
                previousEnd = end;
            }
        }
        Assert.AreEqual(1.0, results[0]!["speedup"]!.GetValue<double>(), 1e-12);

        (code, _, err) = InspectCliTests.Run("bench", TestPaths.Fixture("mistral-torchscript"), "--rounds", "0");
        Assert.AreNotEqual(0, code);
        StringAssert.Contains(err, "--rounds must be >= 1");

        // --rotate-order: the same report (rounds in round order, medians), every model timed in every position.
        (code, stdout, err) = InspectCliTests.Run("bench", TestPaths.Fixture("mistral-torchscript"), converted, "--context", "24", "--batch", "2", "--steps", "2", "--rounds", "2", "--rotate-order", "--no-collect", "--json");
        Assert.AreEqual(0, code, err);
        results = JsonNode.Parse(stdout)!["results"]!.AsArray();
        foreach (var r in results)
        {
            Assert.IsTrue(r!["rotate_order"]!.GetValue<bool>());
            Assert.IsFalse(r["collect_before_rounds"]!.GetValue<bool>());
            Assert.HasCount(2, r["decode_ms_per_step_rounds"]!.AsArray());
        }
        int[] Positions(int m) => results[m]!["round_positions"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
        CollectionAssert.AreEqual(new[] { 0, 1 }, Positions(0)); // round 0 starts with model 0, round 1 with model 1
        CollectionAssert.AreEqual(new[] { 1, 0 }, Positions(1));
        (code, _, err) = InspectCliTests.Run("bench", TestPaths.Fixture("mistral-torchscript"), "--rotate-order");
        Assert.AreNotEqual(0, code);
        StringAssert.Contains(err, "--rotate-order changes the order of interleaved rounds");
    }
}

[TestClass]
public sealed class JsonOnEveryVerbTests
{
    [TestMethod]
    [TestCategory("Slow")]
    public void GenerateAndDemoPrintJson()
    {
        var (code, stdout, err) = InspectCliTests.Run("generate", TestPaths.Fixture("gpt2-ortattention"), "--tokenizer", Path.Combine(TestPaths.Graphs, "demo"),
            "--prompt", "Hello there", "--max-new", "4", "--json");
        Assert.AreEqual(0, code, err);
        Assert.HasCount(4, JsonNode.Parse(stdout)!["tokens"]!.AsArray());
        (code, stdout, err) = InspectCliTests.Run("demo", "--max-new", "4", "--json", "--graphs", TestPaths.Graphs);
        Assert.AreEqual(0, code, err);
        var results = JsonNode.Parse(stdout)!["results"]!.AsArray();
        Assert.HasCount(3, results);
        Assert.IsTrue(results[1]!["identical"]!.GetValue<bool>(), "the native conversion generates the original's tokens");
    }
}
