using MixAttention.Onnx.Plan;
using System.Text.Json.Nodes;
using Google.Protobuf;
using MixAttention.Onnx.Lowering;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Onnx.Proto;
using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Tests.Cli;
using MixAttention.Onnx.Tests.Runtime;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Reliability;

/// <summary>
/// A converted model whose cache plan (metadata) or cache axes were edited: every lie is refused with one clear
/// error before any cache is allocated, never a crash or a huge allocation (issue 22).
/// </summary>
[TestClass]
public sealed class HostilePlanTests
{
    /// <summary>A copy of a converted fixture (with its data files) whose plan JSON and graph were edited.</summary>
    internal static string Tampered(string converted, Action<JsonObject> plan, Action<GraphProto>? graph = null)
    {
        var dir = TestPaths.TempDir();
        foreach (var f in Directory.GetFiles(Path.GetDirectoryName(converted)!))
            if (f.EndsWith(".data", StringComparison.Ordinal)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(converted));
        var entry = proto.MetadataProps.First(p => p.Key == CachePlan.MetadataKey);
        var json = JsonNode.Parse(entry.Value)!.AsObject();
        plan(json);
        entry.Value = json.ToJsonString();
        graph?.Invoke(proto.Graph);
        var path = Path.Combine(dir, Path.GetFileName(converted));
        File.WriteAllBytes(path, proto.ToByteArray());
        return path;
    }

    private static (string Key, string Value) CacheInputs(string converted)
    {
        var plan = CachePlan.FromModel(ModelProto.Parser.ParseFrom(File.ReadAllBytes(converted)))!;
        return (plan.Caches[0].PastKey, plan.Caches[0].PastValue);
    }

    private static void SymbolicHeads(GraphProto g, string input)
    {
        var dims = g.Input.First(i => i.Name == input).Type.TensorType.Shape.Dim;
        dims[1] = new TensorShapeProto.Types.Dimension { DimParam = "kv_heads" };
    }

    /// <summary>
    /// Issue 22 case 1: kv_num_heads = -4 in the plan, the head axis of that cache symbolic in the graph. Before: a
    /// negative byte count passed the limit check, a 1-byte buffer was cleared far past its end (SIGSEGV, exit 139) in
    /// both bench and verify. Now: exit 2, one line naming kv_num_heads.
    /// </summary>
    [TestMethod]
    [DataRow(-4)]
    [DataRow(0)]
    [DataRow(int.MaxValue)]
    public void NegativeHeadsWithSymbolicHeadAxisExitTwo(int heads)
    {
        var converted = RuntimeFixtures.Convert("llama-gqa");
        var (key, value) = CacheInputs(converted);
        var path = Tampered(converted, p => p["caches"]![0]!["kv_num_heads"] = heads,
            g => { SymbolicHeads(g, key); SymbolicHeads(g, value); });
        foreach (var args in new[]
        {
            new[] { "bench", path, "--context", "32", "--steps", "2", "--batch", "1" },
            new[] { "verify", TestPaths.Fixture("llama-gqa"), path, "--steps", "2" },
        })
        {
            var (code, _, err) = InspectCliTests.Run(args);
            Assert.AreEqual(2, code, $"{args[0]}: {err}");
            var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.HasCount(1, lines, err);
            StringAssert.Contains(lines[0], "kv_num_heads");
        }
    }

    /// <summary>The plan agrees with itself but not with the graph: the head axis is symbolic, so nothing vouches for the plan's heads. Refused at open.</summary>
    [TestMethod]
    public void SymbolicHeadAxisIsRefusedAtOpen()
    {
        var converted = RuntimeFixtures.Convert("llama-gqa");
        var (key, _) = CacheInputs(converted);
        var path = Tampered(converted, _ => { }, g => SymbolicHeads(g, key));
        var e = Assert.ThrowsExactly<MixAttentionException>(() => RuntimeFixtures.Open(path));
        StringAssert.Contains(e.Message, key);
        StringAssert.Contains(e.Message, "fixed in the graph");
    }

    /// <summary>Every field of the wrong JSON type is a MixAttentionException (the CLI's exit 2), never InvalidOperationException (exit 3).</summary>
    [TestMethod]
    [DataRow("layers", "\"six\"")]
    [DataRow("layers", "1.5")]
    [DataRow("kv_source", "[\"a\"]")]
    [DataRow("windows", "[null]")]
    [DataRow("backend", "[1]")]
    [DataRow("inputs", "{\"input_ids\":7}")]
    [DataRow("version", "\"1\"")]
    [DataRow("caches", "[{\"owner\":\"0\"}]")]
    [DataRow("caches", "[1]")]
    public void WrongJsonTypesAreUserErrors(string key, string value)
    {
        var plan = JsonNode.Parse(RealPlan())!.AsObject();
        plan[key] = JsonNode.Parse(value);
        Assert.ThrowsExactly<MixAttentionException>(() => CachePlan.FromJson(plan.ToJsonString()));
    }

    /// <summary>Counts and sizes out of bounds, and plans that contradict themselves, are refused by the parser.</summary>
    [TestMethod]
    [DataRow("kv_num_heads", -1)]
    [DataRow("kv_num_heads", 0)]
    [DataRow("kv_num_heads", 1 << 20)]
    [DataRow("head_size", -8)]
    [DataRow("head_size", int.MaxValue)]
    [DataRow("window", -1)]
    [DataRow("window", int.MaxValue)]
    [DataRow("owner", 99)]
    [DataRow("owner", -1)]
    public void CacheFieldsOutOfBoundsAreRefused(string field, int value)
    {
        var plan = JsonNode.Parse(RealPlan())!.AsObject();
        plan["caches"]![0]![field] = value;
        var e = Assert.ThrowsExactly<MixAttentionException>(() => CachePlan.FromJson(plan.ToJsonString()));
        StringAssert.StartsWith(e.Message, "cache plan");
    }

    [TestMethod]
    public void InconsistentPlansAreRefused()
    {
        JsonObject P() => JsonNode.Parse(RealPlan())!.AsObject();
        var a = P(); a["layers"] = 100000000;
        var b = P(); b["kv_source"]!.AsArray()[0] = 5000;
        var c = P(); c["caches"]!.AsArray().Add(c["caches"]![0]!.DeepClone());
        var d = P(); d["caches"]![0]!["readers"] = new JsonArray(-3);
        var e = P(); e["caches"]![0]!["past_key"] = "";
        foreach (var bad in new[] { a, b, c, d, e })
            Assert.ThrowsExactly<MixAttentionException>(() => CachePlan.FromJson(bad.ToJsonString()), bad.ToJsonString());
        Assert.IsNotNull(CachePlan.FromJson(RealPlan()));
    }

    private static string RealPlan() =>
        ModelProto.Parser.ParseFrom(File.ReadAllBytes(RuntimeFixtures.Convert("gemma3-torchscript"))).MetadataProps.First(p => p.Key == CachePlan.MetadataKey).Value;

    /// <summary>
    /// Issue 22 case 6: a plan window of 10,000,000 (the graph's ops still say 16) made a 2.5 GB ring. A ring is now
    /// bounded by what the session can reach (MaxLength + PrefillChunk − 1), and the session still decodes.
    /// </summary>
    [TestMethod]
    public void HugePlanWindowDoesNotMakeAHugeRing()
    {
        var converted = RuntimeFixtures.Convert("gemma3-torchscript");
        var path = Tampered(converted, p =>
        {
            foreach (var c in p["caches"]!.AsArray())
                if (c!["window"]!.GetValue<int>() > 0) c["window"] = 10_000_000;
            var w = p["windows"]!.AsArray();
            for (int i = 0; i < w.Count; i++) if (w[i]!.GetValue<int>() > 0) w[i] = 10_000_000;
        });
        using var model = RuntimeFixtures.Open(path);
        using var session = (InPlaceCacheSession)model.CreateSession(new SessionConfig { MaxBatch = 2, MaxLength = 64, PrefillChunk = 8 });
        var memory = session.Memory();
        Assert.IsLessThan(8L << 20, memory.AllocatedBytes, $"allocated {memory.AllocatedBytes} bytes");
        var seq = session.AddSequence();
        session.Prefill(seq, RuntimeFixtures.RandomTokens(3, 8));
        session.Decode(new[] { seq }, new long[] { 5 });
    }

    /// <summary>
    /// A ring bounded below its window (window 16 in the graph, MaxLength 8, chunk 4: capacity 11) never wraps and
    /// gives the same logits as the full ring; the sequence stops at MaxLength with a CacheOverflowException.
    /// </summary>
    [TestMethod]
    public void RingBoundedBelowItsWindowMatchesTheFullRing()
    {
        using var model = RuntimeFixtures.Open(RuntimeFixtures.Convert("gemma3-torchscript"));
        var tokens = RuntimeFixtures.RandomTokens(7, 8);
        float[] Run(int maxLength)
        {
            using var session = model.CreateSession(new SessionConfig { MaxBatch = 1, MaxLength = maxLength, PrefillChunk = 4 });
            var seq = session.AddSequence();
            var logits = new List<float>(session.Prefill(seq, tokens[..4]));
            for (int t = 4; t < 8; t++) logits.AddRange(session.Decode(new[] { seq }, new[] { tokens[t] })[0]);
            if (maxLength == 8)
                Assert.ThrowsExactly<CacheOverflowException>(() => session.Decode(new[] { seq }, new long[] { 1 }));
            return logits.ToArray();
        }
        var bounded = Run(8);
        var full = Run(64);
        Assert.IsLessThanOrEqualTo(1e-5f, Compare.MaxAbsDiff(bounded, full));
    }
}
