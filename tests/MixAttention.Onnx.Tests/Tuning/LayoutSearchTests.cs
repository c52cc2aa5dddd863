using MixAttention.Onnx.Layouts;
using MixAttention.Onnx.Runtime.Tuning;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Tuning;

/// <summary>
/// Issue 20: <c>LayoutSearch</c> (mixattn tune) finds the known optimum on models built so the answer is known. Each
/// expected layout is one of several that fit the budget, so a search that picked at random would fail.
/// </summary>
[TestClass]
public sealed class LayoutSearchTests
{
    private static readonly EvaluationOptions Run = new() { Context = 64, PrefillChunk = 16, DecodeTokens = 4 };

    private static long Bytes(string source, string layout)
    {
        var models = new MixAttention.Onnx.Runtime.Tuning.CandidateModels(source);
        return KvMemory.Layout(LayoutParser.Parse(layout, models.Context), models.Context, 64);
    }

    /// <summary>
    /// Gemma-3 (layers 0 and 1 trained with window 8, layer 2 global) at the KV bytes of its own layout: the search
    /// starts from three global caches and must slide exactly layers 0 and 1 (sliding layer 2 instead saves the same
    /// bytes at a loss): it finds `native`, KL 0.
    /// </summary>
    [TestMethod]
    public void WindowedModelFindsNativeAtItsOwnBudget()
    {
        var source = ZooFixtures.Model("gemma3_text-dynamo");
        long budget = Bytes(source, "native");
        var result = LayoutSearch.Run(source, EvaluationTests.Text(128), new LayoutSearchOptions { BudgetBytes = budget, Evaluation = Run });
        Assert.AreEqual("0s8_1s8_2", result.Chosen.Layout.ToCompactString(withWindows: true));
        Assert.AreEqual(budget, result.Chosen.KvBytesPerSequence);
        Assert.IsLessThanOrEqualTo(1e-6, result.Chosen.Quality.MeanKl);
        Assert.IsTrue(result.MeetsMaxKl);
        // The alternatives were measured and cost KL: making a trained sliding layer global, or sliding the global one.
        Assert.IsTrue(result.Evaluated.Any(c => c.Role == "probe" && c.Quality.MeanKl > 1e-4));
        Assert.AreEqual(3L * 64 * 2 * 2 * 8 * 4, result.UnconvertedBytes);
    }

    /// <summary>
    /// Qwen2 (layers 0, 1 global; 2, 3 window 8) edited so that layer 1 computes exactly layer 0's keys and values:
    /// layer 0 writes nothing to the residual stream (attention output and MLP down projections zero), so layer 1 reads
    /// the same hidden state, with layer 0's norm and K/V weights copied in. At one global cache less than its own
    /// layout, the search must make layer 1 read layer 0's cache (exact) rather than share or slide any other layer.
    /// </summary>
    [TestMethod]
    public void IdenticalKeysAndValuesAreShared()
    {
        var edit = new EditedModel("qwen2-dynamo");
        edit.Scale(0, "self_attn.o_proj.weight", 0);
        edit.Scale(0, "mlp.down_proj.weight", 0);
        foreach (var w in new[] { "input_layernorm.weight", "self_attn.k_proj.weight", "self_attn.k_proj.bias", "self_attn.v_proj.weight", "self_attn.v_proj.bias" })
            edit.Copy(0, 1, w);
        var source = edit.Save();
        long budget = Bytes(source, "native") - 64L * 2 * 2 * 8 * 4; // one full cache of 64 positions less
        var result = LayoutSearch.Run(source, EvaluationTests.Text(128), new LayoutSearchOptions
        {
            BudgetBytes = budget, Windows = new[] { 4, 8 }, Evaluation = Run,
        });
        Assert.AreEqual("0_0_2s8_3s8", result.Chosen.Layout.ToCompactString(withWindows: true), Describe(result));
        Assert.IsLessThanOrEqualTo(1e-6, result.Chosen.Quality.MeanKl);
    }

    /// <summary>
    /// Qwen2 edited so that layer 1 needs the whole context: its queries are zero (it averages the values of every token
    /// it sees) and its output is amplified; layer 0 writes nothing (so what layer 1 reads does not depend on it). The
    /// budget keeps one global cache and slides the rest to window 4; the search must keep layer 1 global (any of the
    /// four layers could be the one kept).
    /// </summary>
    [TestMethod]
    public void LongRangeLayerStaysGlobal()
    {
        var edit = new EditedModel("qwen2-dynamo");
        edit.Scale(1, "self_attn.q_proj.weight", 0);
        edit.Scale(1, "self_attn.q_proj.bias", 0);
        edit.Scale(1, "self_attn.o_proj.weight", 30);
        edit.Scale(0, "self_attn.o_proj.weight", 0);
        var source = edit.Save();
        long budget = Bytes(source, "0s4_1_2s4_3s4");
        var result = LayoutSearch.Run(source, EvaluationTests.Text(128), new LayoutSearchOptions
        {
            BudgetBytes = budget, Windows = new[] { 4 }, Evaluation = Run,
        });
        var chosen = result.Chosen.Layout;
        Assert.IsTrue(chosen[1].IsGlobal && chosen[1].IsOwner, Describe(result));
        Assert.IsTrue(new[] { 0, 2, 3 }.All(l => chosen[l].IsSliding), Describe(result));
        Assert.IsLessThanOrEqualTo(budget, result.Chosen.KvBytesPerSequence);
    }

    private static string Describe(LayoutSearchResult r) =>
        $"chosen {r.Chosen.Layout.ToCompactString(true)}; evaluated: " +
        string.Join("; ", r.Evaluated.Select(c => $"{c.Role} {c.Layout.ToCompactString(true)} {c.KvBytesPerSequence} B KL {c.Quality.MeanKl:0.###e0} est {c.EstimatedKl:0.###e0}"));
}
