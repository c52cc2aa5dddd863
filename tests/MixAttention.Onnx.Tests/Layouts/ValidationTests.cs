using MixAttention.Onnx.Layouts;
using static MixAttention.Onnx.Tests.Layouts.LayoutTestData;

namespace MixAttention.Onnx.Tests.Layouts;

[TestClass]
public sealed class ValidationTests
{
    private static MixAttentionLayout Layout(params (int Kv, int Window)[] layers) =>
        new(layers.Select((l, i) => new LayerAssignment(i, l.Kv, l.Window)));

    [TestMethod]
    public void LayerCount_MustMatchModel()
    {
        Throws(() => LayoutValidator.Validate(Layout((0, 0), (1, 0)), Ctx(3)), LayoutRule.LayerCount,
            "has 2 layers but the model has 3");
    }

    [TestMethod]
    public void ForwardReference_IsRejected()
    {
        var e = Throws(() => LayoutValidator.Validate(Layout((0, 0), (2, 0), (2, 0)), Ctx(3)), LayoutRule.ForwardReference,
            "layer 1 reads layer 2", "only read its own cache or an earlier layer's (0..1)");
        Assert.AreEqual(1, e.Layer);
        Throws(() => LayoutParser.Parse("0_1_5", Ctx(3)), LayoutRule.ForwardReference, "layer 2 reads layer 5");
    }

    [TestMethod]
    public void SourceMustBeAnOwner()
    {
        var e = Throws(() => LayoutParser.Parse("0_0_1", Ctx(3)), LayoutRule.SourceNotOwner,
            "layer 2 reads layer 1, which owns no cache", "layer 1 itself reads layer 0", "point layer 2 at the owner 0");
        Assert.AreEqual(2, e.Layer);
    }

    [TestMethod]
    public void GlobalReader_NeedsGlobalOwner()
    {
        Throws(() => LayoutParser.Parse("0s_0", Ctx(2)), LayoutRule.KindMismatch,
            "layer 1 is global but reads layer 0, a sliding owner (window 1024)", "a global reader needs a global owner");
    }

    [TestMethod]
    public void SlidingReader_NeedsSlidingOwner()
    {
        Throws(() => LayoutParser.Parse("0_0s", Ctx(2)), LayoutRule.KindMismatch,
            "layer 1 is sliding (window 1024) but reads layer 0, a global owner", "a sliding reader needs a sliding owner");
    }

    [TestMethod]
    public void SlidingReader_WindowMustNotExceedOwners()
    {
        Throws(() => LayoutParser.Parse("0s512_0s1024", Ctx(2)), LayoutRule.WindowTooLarge,
            "layer 1 has window 1024 but reads layer 0 whose window is 512", "same as or smaller");
        // Same or smaller is fine.
        Assert.IsTrue(LayoutValidator.IsValid(LayoutParser.Parse("0s512_0s512_0s128", Ctx(3)), Ctx(3)));
    }

    [TestMethod]
    public void NegativeWindow_IsRejected()
    {
        Throws(() => LayoutValidator.Validate(Layout((0, 0), (1, -5)), Ctx(2)), LayoutRule.InvalidWindow,
            "layer 1: window -5 is negative");
    }

    [TestMethod]
    public void CommandLineWindow_MustBePositive()
    {
        Throws(() => LayoutContext.Uniform(4, commandLineWindow: 0), LayoutRule.InvalidWindow, "--window must be > 0");
    }

    [TestMethod]
    [DataRow(16, 8, 128, 10, "heads 32 vs 16")]
    [DataRow(32, 4, 128, 10, "kv heads 8 vs 4")]
    [DataRow(32, 8, 64, 10, "head size 128 vs 64")]
    [DataRow(32, 8, 128, 1, "element type 10 vs 1")]
    public void ReaderAndOwner_MustHaveTheSameShape(int heads, int kvHeads, int headSize, int elementType, string fragment)
    {
        var layers = new[]
        {
            new LayerInfo(0, heads, kvHeads, headSize, elementType),
            new LayerInfo(1, 32, 8, 128, 10),
        };
        var ctx = new LayoutContext(layers, 1024);
        Throws(() => LayoutParser.Parse("0_0", ctx), LayoutRule.ShapeMismatch,
            "layer 1 reads layer 0 but their shapes differ", fragment, "a reader must match its owner");
        Assert.IsTrue(LayoutValidator.IsValid(LayoutParser.Parse("0_1", ctx), ctx));
    }

    [TestMethod]
    public void ModelInfo_MustCoverLayersInOrder()
    {
        Throws(() => new LayoutContext([new LayerInfo(1, 8, 8, 64, 1)]), LayoutRule.ModelInfo, "expected layer 0");
        Throws(() => new LayoutContext([]), LayoutRule.ModelInfo, "no attention layers");
        Throws(() => new LayoutContext([new LayerInfo(0, 8, 0, 64, 1)]), LayoutRule.ModelInfo, "kv heads=0");
    }

    [TestMethod]
    public void Validate_ReportsFirstProblem_AndCountsTheRest()
    {
        var layout = Layout((0, 0), (0, 0), (1, 0), (5, 0));
        var problems = LayoutValidator.FindProblems(layout, Ctx(4));
        Assert.HasCount(2, problems);
        Assert.AreEqual(LayoutRule.SourceNotOwner, problems[0].Rule);
        Assert.AreEqual(LayoutRule.ForwardReference, problems[1].Rule);
        Throws(() => LayoutValidator.Validate(layout, Ctx(4)), LayoutRule.SourceNotOwner, "layer 2", "(and 1 more problem)");
    }

    [TestMethod]
    public void Differences_NativeIsExact_SharingIsNot()
    {
        var ctx = LayoutContext.Uniform(6, modelWindow: 4096);
        Assert.IsEmpty(LayoutValidator.Differences(LayoutPresets.Native.Build(ctx), ctx));

        var shared = LayoutParser.Parse("0s_0s_2_3_4s512_4s512", ctx);
        var diffs = LayoutValidator.Differences(shared, ctx);
        CollectionAssert.Contains(diffs.ToList(), "layer 1: reads layer 0's keys/values instead of computing its own");
        CollectionAssert.Contains(diffs.ToList(), "layer 2: global where the model has a sliding window 4096 (it sees tokens it was not trained to see)");
        CollectionAssert.Contains(diffs.ToList(), "layer 4: window 512 is smaller than the model's own 4096");
    }
}
