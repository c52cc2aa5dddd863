using System.Text.Json.Nodes;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Plan;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Cli;

/// <summary><c>mixattn convert --kv-dtype/--kv-scale/--kv-scale-granularity/--calibrate</c>: what they write and their errors (exit 2, one line).</summary>
[TestClass]
public sealed class KvDTypeCliTests
{
    private static string Source => TestPaths.Fixture("llama-gqa");

    private static JsonNode ConvertJson(string output, params string[] extra)
    {
        var (code, stdout, err) = InspectCliTests.Run(["convert", Source, "-o", output, "--json", .. extra]);
        Assert.AreEqual(0, code, err);
        return JsonNode.Parse(stdout)!;
    }

    private static float[] KeyScales(string model)
    {
        var proto = OnnxModel.Load(model).Proto;
        var plan = CachePlan.FromModel(proto)!;
        return proto.Graph.Initializer.Single(t => t.Name == plan.Caches[0].Scales!.Key).FloatData.ToArray();
    }

    [TestMethod]
    public void FixedRuleWritesInt8CachesAndTheCheckRunsThem()
    {
        var output = Path.Combine(TestPaths.TempDir(), "m.onnx");
        var doc = ConvertJson(output, "--kv-dtype", "int8", "--kv-scale", "absmax:4", "--kv-scale-granularity", "head");
        var cache = doc["cache_plan"]!["caches"]![0]!;
        Assert.AreEqual("int8", cache["dtype"]!.GetValue<string>());
        Assert.AreEqual("head", cache["scales"]!["granularity"]!.GetValue<string>());
        Assert.IsFalse(doc["exact"]!.GetValue<bool>(), "quantized caches are never claimed exact");
        Assert.AreEqual("compare", doc["check"]!["done"]!.GetValue<string>(), doc["check"]!.ToJsonString());
        Assert.IsTrue(KeyScales(output).All(s => s == 4f / 127f));
        var before = doc["kv_bytes_per_sequence"]![0]!["before"]!.GetValue<long>();
        var after = doc["kv_bytes_per_sequence"]![0]!["after"]!.GetValue<long>();
        Assert.AreEqual(before, 4 * after, "native layout, int8: a quarter of the fp32 source's cache");
    }

    [TestMethod]
    public void CalibrationFromTokensIsDeterministic()
    {
        var ids = string.Join(",", QuantizedTokens());
        var a = Path.Combine(TestPaths.TempDir(), "a.onnx");
        var b = Path.Combine(TestPaths.TempDir(), "b.onnx");
        var doc = ConvertJson(a, "--kv-dtype", "int8", "--calibrate", ids, "--check", "none");
        ConvertJson(b, "--kv-dtype", "int8", "--calibrate", ids, "--check", "none");
        CollectionAssert.AreEqual(KeyScales(a), KeyScales(b));
        StringAssert.Contains(doc["differences"]!.ToJsonString(), "48 listed tokens");
        // A token file and the same list give the same scales; other tokens give others.
        var file = Path.Combine(TestPaths.TempDir(), "tokens.txt");
        File.WriteAllText(file, ids.Replace(",", " "));
        var c = Path.Combine(TestPaths.TempDir(), "c.onnx");
        ConvertJson(c, "--kv-dtype", "int8", "--calibrate", file, "--check", "none");
        CollectionAssert.AreEqual(KeyScales(a), KeyScales(c));
        var d = Path.Combine(TestPaths.TempDir(), "d.onnx");
        ConvertJson(d, "--kv-dtype", "int8", "--calibrate", "random:64", "--check", "none");
        CollectionAssert.AreNotEqual(KeyScales(a), KeyScales(d));
    }

    [TestMethod]
    public void CalibrationFromTextUsesTheTokenizer()
    {
        var text = Path.Combine(TestPaths.TempDir(), "calibration.txt");
        File.WriteAllText(text, string.Join(" ", Enumerable.Repeat("The quick brown fox jumps over the lazy dog, and the cache keeps every token of it.", 8)));
        var output = Path.Combine(TestPaths.TempDir(), "m.onnx");
        var (code, stdout, err) = InspectCliTests.Run("convert", TestPaths.Fixture("gpt2-ortattention"), "-o", output, "--json", "--kv-dtype", "int8",
            "--calibrate", text, "--tokenizer", Path.Combine(TestPaths.Graphs, "demo"), "--check", "load");
        Assert.AreEqual(0, code, err);
        StringAssert.Contains(JsonNode.Parse(stdout)!["differences"]!.ToJsonString(), "calibration.txt");
        Assert.IsTrue(KeyScales(output).All(s => s > 0 && float.IsFinite(s)));
        var (noTok, _, noTokErr) = InspectCliTests.Run("convert", TestPaths.Fixture("gpt2-ortattention"), "-o", Path.Combine(TestPaths.TempDir(), "n.onnx"), "--kv-dtype", "int8", "--calibrate", text);
        Assert.AreEqual(2, noTok, noTokErr);
        StringAssert.Contains(noTokErr, "no tokenizer");
    }

    private static long[] QuantizedTokens() => Enumerable.Range(0, 48).Select(i => (long)(i * 37 % 90)).ToArray();

    [TestMethod]
    [DataRow("--kv-dtype", "fp16", null, null, "fp32")]
    [DataRow("--kv-dtype", "int4", null, null, "int4")]
    [DataRow("--kv-dtype", "int8", "--kv-scale", "absmax:-1", "must be a finite number")]
    [DataRow("--kv-dtype", "int8", "--kv-scale", "minmax", "is not a scale rule")]
    [DataRow("--kv-dtype", "int8", "--calibrate", "random:0", "random:N")]
    [DataRow("--kv-dtype", "int8", "--calibrate", "5,99999", "outside the model's vocabulary")]
    [DataRow("--kv-dtype", "int8", "--calibrate", "no-such-file.txt", "neither a file")]
    [DataRow("--kv-scale", "fixed:0.1", "--calibrate", "random:8", "--kv-scale, --calibrate apply to quantized caches only")]
    [DataRow("--kv-scale-granularity", "row", null, null, "row")]
    [DataRow("--layout", """{"version": 1, "layers": [{"kv": 0, "window": 0, "kv_dtype": "int8"}, {"kv": 0, "window": 0, "kv_dtype": "fp8"}]}""", "--kv-scale", "absmax:4", "layer 1")]
    public void BadFlagsExitTwoWithOneLine(string flag, string value, string? flag2, string? value2, string words)
    {
        var dir = TestPaths.TempDir();
        string[] args = ["convert", Source, "-o", Path.Combine(dir, "m.onnx"), flag, value];
        if (flag2 is not null) args = [.. args, flag2, value2!];
        var (code, _, err) = InspectCliTests.Run(args);
        Assert.AreEqual(2, code, err);
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.IsNotEmpty(lines);
        StringAssert.Contains(err, words);
        Assert.IsEmpty(Directory.GetFileSystemEntries(dir), "nothing is written");
    }

    /// <summary>
    /// The scale flags without a quantized cache are a forgotten <c>--kv-dtype</c>: exit 2 with one line that says so,
    /// even when the value itself is malformed (not its parse error, which would send the user to fix the wrong flag).
    /// </summary>
    [TestMethod]
    [DataRow("--kv-scale", "garbage")]
    [DataRow("--kv-scale", "absmax:4")]
    [DataRow("--kv-scale-granularity", "head")]
    [DataRow("--calibrate", "random:8")]
    public void ScaleFlagsWithoutAQuantizedCacheAskForKvDType(string flag, string value)
    {
        var dir = TestPaths.TempDir();
        var (code, _, err) = InspectCliTests.Run("convert", Source, "-o", Path.Combine(dir, "m.onnx"), flag, value);
        Assert.AreEqual(2, code, err);
        StringAssert.Contains(err, $"{flag} applies to quantized caches only: add --kv-dtype int8 or fp8");
        Assert.HasCount(1, err.Split('\n', StringSplitOptions.RemoveEmptyEntries), err);
        Assert.IsEmpty(Directory.GetFileSystemEntries(dir), "nothing is written");
    }

    /// <summary>
    /// Whether a JSON layout quantizes is read from its layers' <c>kv_dtype</c> by the layout parser, not guessed from
    /// its text: a layout that only mentions "int8" in its description stores float caches, so a scale flag is refused.
    /// </summary>
    [TestMethod]
    public void AJsonLayoutQuantizesOnlyThroughItsLayersKvDType()
    {
        var dir = TestPaths.TempDir();
        var layout = """{"version": 1, "description": "int8", "name": "fp8", "layers": [{"kv": 0, "window": 0}, {"kv": 1, "window": 0}]}""";
        var (code, _, err) = InspectCliTests.Run("convert", Source, "-o", Path.Combine(dir, "m.onnx"), "--layout", layout, "--kv-scale", "absmax:4");
        Assert.AreEqual(2, code, err);
        StringAssert.Contains(err, "--kv-scale applies to quantized caches only");
        Assert.IsEmpty(Directory.GetFileSystemEntries(dir), "nothing is written");
    }

    [TestMethod]
    public void ScaleFlagsWithAQuantizedCacheStillCheckTheirValues()
    {
        var dir = TestPaths.TempDir();
        var (code, _, err) = InspectCliTests.Run("convert", Source, "-o", Path.Combine(dir, "m.onnx"), "--kv-dtype", "int8", "--kv-scale", "fixed:0.1", "--calibrate", "random:8");
        Assert.AreEqual(2, code, err);
        StringAssert.Contains(err, "needs no calibration run");
        // A layout that quantizes counts as asking for it: the value is read, and a bad one named.
        var layout = """{"version": 1, "layers": [{"kv": 0, "window": 0, "kv_dtype": "int8"}, {"kv": 1, "window": 0, "kv_dtype": "int8"}]}""";
        (code, _, err) = InspectCliTests.Run("convert", Source, "-o", Path.Combine(dir, "m.onnx"), "--layout", layout, "--kv-scale", "garbage");
        Assert.AreEqual(2, code, err);
        StringAssert.Contains(err, "is not a scale rule");
        Assert.IsEmpty(Directory.GetFileSystemEntries(dir), "nothing is written");
    }

    [TestMethod]
    public void BenchReportsKvBytesByDType()
    {
        var output = Path.Combine(TestPaths.TempDir(), "m.onnx");
        ConvertJson(output, "--kv-dtype", "int8", "--kv-scale", "absmax:4", "--check", "none");
        var (code, stdout, err) = InspectCliTests.Run("bench", output, "--context", "32", "--steps", "2", "--batch", "1", "--json");
        Assert.AreEqual(0, code, err);
        var result = JsonNode.Parse(stdout)!["results"]![0]!;
        Assert.AreEqual(result["kv_bytes_allocated"]!.GetValue<long>(), result["kv_bytes_allocated_by_dtype"]!["int8"]!.GetValue<long>());
    }
}
