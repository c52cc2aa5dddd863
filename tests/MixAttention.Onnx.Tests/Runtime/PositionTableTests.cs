using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Onnx.Proto;
using MixAttention.Onnx.Plan;
using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Tests.Reliability;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Runtime;

/// <summary>
/// The plan's <c>max_positions</c>: the rows of the rotary tables the converted attention reads. A session longer than
/// that is refused at creation, not mid-sequence by the op.
/// </summary>
[TestClass]
public sealed class PositionTableTests
{
    /// <summary>Rows of the source's GQA cos_cache initializer (the export's max_position_embeddings).</summary>
    private static long SourceRows(string model)
    {
        var graph = OnnxModel.Load(model).Proto.Graph;
        var gqa = graph.Node.First(n => n.OpType == "GroupQueryAttention");
        return graph.Initializer.Single(t => t.Name == gqa.Input[7]).Dims[0];
    }

    [TestMethod]
    [DataRow("native", "ops")]
    [DataRow("cai", "ops")]
    [DataRow("native", "ort-gqa")]
    public void TheConverterRecordsTheRotaryTableRows(string layout, string backend)
    {
        var source = ZooFixtures.Model("llama-gqa");
        var converted = ZooFixtures.Convert(source, layout, backend, layout == "cai" ? 4 : null);
        var plan = CachePlan.FromModel(ModelProto.Parser.ParseFrom(File.ReadAllBytes(converted)))!;
        Assert.AreEqual<int?>((int)SourceRows(source), plan.MaxPositions);
    }

    [TestMethod]
    public void ALongerSessionIsRefusedAndTheLongestWorks()
    {
        var converted = ZooFixtures.Convert(ZooFixtures.Model("llama-gqa"), "native");
        using var model = MixAttentionModel.Open(converted, new ModelOptions { IntraOpNumThreads = 1 });
        int rows = model.Plan!.MaxPositions!.Value;
        var e = Assert.ThrowsExactly<MixAttentionException>(() => model.CreateSession(new SessionConfig { MaxLength = rows + 1 }));
        StringAssert.Contains(e.Message, $"MaxLength {rows + 1}");
        StringAssert.Contains(e.Message, $"({rows} positions");
        // At the limit, a sequence fills every row of the table.
        using var session = model.CreateSession(new SessionConfig { MaxLength = rows, PrefillChunk = 32 });
        int seq = session.AddSequence();
        session.Prefill(seq, Enumerable.Range(0, rows - 1).Select(i => (long)(i % 50)).ToArray());
        var logits = session.Decode(new[] { seq }, new[] { 7L })[0];
        Assert.IsTrue(logits.All(float.IsFinite));
        Assert.AreEqual(rows, session.Length(seq));
    }

    [TestMethod]
    public void APlanWithoutATableHasNoLimit()
    {
        // gemma3_text-dynamo computes its rotary from the positions (no cos/sin initializers): nothing to record.
        var converted = ZooFixtures.Convert(ZooFixtures.Model("gemma3_text-dynamo"), "native");
        var plan = CachePlan.FromModel(ModelProto.Parser.ParseFrom(File.ReadAllBytes(converted)))!;
        Assert.IsNull(plan.MaxPositions);
        Assert.IsFalse(CachePlan.FromJson(plan.ToJson()).ToJson().Contains("max_positions", StringComparison.Ordinal));
    }

    [TestMethod]
    [DataRow("0")]
    [DataRow("-5")]
    public void ANonPositiveLimitIsRefused(string value)
    {
        var converted = ZooFixtures.Convert(ZooFixtures.Model("llama-gqa"), "native");
        var path = HostilePlanTests.Tampered(converted, p => p["max_positions"] = System.Text.Json.Nodes.JsonNode.Parse(value));
        var e = Assert.ThrowsExactly<MixAttentionException>(() => CachePlan.FromModel(ModelProto.Parser.ParseFrom(File.ReadAllBytes(path))));
        StringAssert.Contains(e.Message, "max_positions");
    }
}
