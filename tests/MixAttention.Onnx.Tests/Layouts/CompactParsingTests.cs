using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Layouts;
using static MixAttention.Onnx.Tests.Layouts.LayoutTestData;

namespace MixAttention.Onnx.Tests.Layouts;

[TestClass]
public sealed class CompactParsingTests
{
    [TestMethod]
    public void LckvPairsString_At22Layers_HasExactlyTheExpectedOwners()
    {
        var layout = LayoutParser.Parse(LckvPairs22, Ctx(22));

        CollectionAssert.AreEqual(new[] { 0, 1, 3, 7, 9, 12, 13, 15, 19 }, layout.Owners.ToArray());
        CollectionAssert.AreEqual(new[] { 6 }, layout.ReadersOf(0).ToArray());
        CollectionAssert.AreEqual(new[] { 18 }, layout.ReadersOf(12).ToArray());
        CollectionAssert.AreEqual(new[] { 2 }, layout.ReadersOf(1).ToArray());
        CollectionAssert.AreEqual(new[] { 4, 5 }, layout.ReadersOf(3).ToArray());
        CollectionAssert.AreEqual(new[] { 20, 21 }, layout.ReadersOf(19).ToArray());
        Assert.IsTrue(layout[0].IsGlobal && layout[6].IsGlobal && layout[12].IsGlobal && layout[18].IsGlobal);
        Assert.IsTrue(layout.Layers.Where(l => l.Layer % 6 != 0).All(l => l.Window == 1024));
        Assert.AreEqual(LayoutOrigin.CompactString, layout.Origin);
        Assert.AreEqual(LckvPairs22, layout.ToCompactString());
    }

    [TestMethod]
    public void ReadersOf_NonOwner_Throws()
    {
        var layout = LayoutParser.Parse(LckvPairs22, Ctx(22));
        var e = Assert.ThrowsExactly<ArgumentException>(() => layout.ReadersOf(2));
        Assert.Contains("layer 2 is not an owner (it reads layer 1)", e.Message);
    }

    [TestMethod]
    [DataRow("0")]
    [DataRow("0_0_0")]
    [DataRow("0s_0s_2s_2s")]
    [DataRow("0_1s_1s_0_4s")]
    [DataRow("0s512_0s256_2_2")]
    public void Compact_RoundTrips(string compact)
    {
        var n = compact.Split('_').Length;
        var layout = LayoutParser.Parse(compact, Ctx(n));
        var again = LayoutParser.Parse(layout.ToCompactString(withWindows: true), Ctx(n));
        Assert.IsTrue(layout.HasSameAssignments(again));
    }

    [TestMethod]
    public void SlidingToken_TakesCommandLineWindow_OverModelWindow()
    {
        var ctx = LayoutContext.Uniform(2, commandLineWindow: 256, modelWindow: 4096);
        var layout = LayoutParser.Parse("0s_0s", ctx);
        Assert.AreEqual(256, layout[0].Window);
        Assert.AreEqual(256, layout[1].Window);
    }

    [TestMethod]
    public void SlidingToken_TakesModelWindow_WithoutCommandLine()
    {
        var layers = new[]
        {
            new LayerInfo(0, 8, 2, 64, 1, 4096, WindowSource.HfConfig),
            new LayerInfo(1, 8, 2, 64, 1, 0),
            new LayerInfo(2, 8, 2, 64, 1, 4096, WindowSource.HfConfig),
        };
        var layout = LayoutParser.Parse("0s_1_0s", new LayoutContext(layers));
        Assert.AreEqual("0s4096_1_0s4096", layout.ToCompactString(withWindows: true));
    }

    [TestMethod]
    public void SlidingToken_WithoutAnyWindow_NamesTheLayer()
    {
        Throws(() => LayoutParser.Parse("0_1s_1s", Ctx(3, window: null)), LayoutRule.MissingWindow,
            "layer 1", "token 1 '1s'", "--window");
    }

    [TestMethod]
    public void ExplicitWindowToken_BeatsCommandLine()
    {
        var layout = LayoutParser.Parse("0s2048_0s512", Ctx(2, window: 64));
        Assert.AreEqual(2048, layout[0].Window);
        Assert.AreEqual(512, layout[1].Window);
    }

    [TestMethod]
    [DataRow("0_1x_1", 1, "'1x'", "'x' at character 1")]
    [DataRow("-1_0", 0, "'-1'", "negative")]
    [DataRow("0__1", 1, "token 1", "is empty")]
    [DataRow("0_1_", 2, "token 2", "is empty")]
    [DataRow("0_s_1", 1, "'s'", "no layer index before 's'")]
    [DataRow("s", 0, "'s'", "no layer index before 's'")]
    [DataRow("0_1s1k", 1, "'1s1k'", "'k' at character 3")]
    [DataRow("0_ 1", 1, "' 1'", "starts with")]
    [DataRow("0_99999999999", 1, "too large")]
    [DataRow("0_abc", 1, "'abc'", "starts with 'a'")]
    public void MalformedToken_ReportsPosition(string spec, int position, params string[] fragments)
    {
        var e = Throws(() => LayoutParser.Parse(spec, Ctx(3)), LayoutRule.MalformedToken,
            [$"token {position}", .. fragments]);
        Assert.AreEqual(position, e.Layer);
    }

    [TestMethod]
    public void SlidingWindowZero_IsAnInvalidWindow()
    {
        var e = Throws(() => LayoutParser.Parse("0_1s0", Ctx(2)), LayoutRule.InvalidWindow, "token 1", "must be > 0");
        Assert.AreEqual(1, e.Layer);
    }

    [TestMethod]
    public void TokenCount_MustEqualLayerCount()
    {
        Throws(() => LayoutParser.Parse("0_1s_1s", Ctx(4)), LayoutRule.LayerCount, "3 tokens", "model has 4 layers");
        Throws(() => LayoutParser.Parse(LckvPairs22, Ctx(24)), LayoutRule.LayerCount, "22 tokens", "24 layers");
    }

    [TestMethod]
    public void EmptyOrUnknownSpec_IsRejected()
    {
        Throws(() => LayoutParser.Parse("   ", Ctx(2)), LayoutRule.UnknownSpec, "empty layout", "cai");
        Throws(() => LayoutParser.Parse("mixattention", Ctx(2)), LayoutRule.UnknownSpec, "unknown layout 'mixattention'", "ma-pairs");
        Throws(() => LayoutParser.Parse("no/such/layout.json", Ctx(2)), LayoutRule.UnknownSpec, "does not exist");
    }

    [TestMethod]
    public void PresetNames_AreCaseInsensitive_AndTrimmed()
    {
        var layout = LayoutParser.Parse("  CAI ", Ctx(13));
        Assert.AreEqual("cai", layout.Name);
        Assert.AreEqual(LayoutOrigin.Preset, layout.Origin);
    }

    [TestMethod]
    public void Tokenize_DoesNotNeedAModel()
    {
        var tokens = LayoutParser.Tokenize("0_0s_1s64");
        Assert.HasCount(3, tokens);
        Assert.AreEqual(new LayoutParser.Token("0s", 0, true, null), tokens[1]);
        Assert.AreEqual(new LayoutParser.Token("1s64", 1, true, 64), tokens[2]);
    }
}
