using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Layouts;
using static MixAttention.Onnx.Tests.Layouts.LayoutTestData;

namespace MixAttention.Onnx.Tests.Layouts;

[TestClass]
public sealed class PresetTests
{
    public static IEnumerable<object[]> PresetsAndCounts =>
        from p in LayoutPresets.All from n in LayerCounts select new object[] { p.Name, n };

    [TestMethod]
    [DynamicData(nameof(PresetsAndCounts))]
    public void EveryPreset_AtEveryLayerCount_IsValid(string name, int layers)
    {
        var ctx = Ctx(layers, 512);
        var layout = LayoutParser.Parse(name, ctx);
        Assert.AreEqual(layers, layout.Count);
        Assert.IsEmpty(LayoutValidator.FindProblems(layout, ctx));
        Assert.AreEqual(name, layout.Name);
        Assert.IsTrue(layout.Layers.All(l => l.Window is 0 or 512 || name == "native"));
        // The compact form (windows from --window) gives the same layout back.
        Assert.IsTrue(LayoutParser.Parse(layout.ToCompactString(), ctx).HasSameAssignments(layout));
    }

    [TestMethod]
    public void Cai_At13Layers_IsLlmFoundrysCharacterAiModel()
    {
        // test_construct_blocks: layer 0 global; for offsets 1 and 7: o owns, o+1 reads o, o+2 owns, o+3 and o+4 read o+2
        // (sliding 1024); o+5 global reading layer 0.
        Assert.AreEqual(LlmFoundryCai13, LayoutPresets.CharacterAi.Build(13, 1024).ToCompactString());
    }

    [TestMethod]
    public void MaPairs_At22Layers_IsTheLckvString()
    {
        Assert.AreEqual(LckvPairs22, LayoutPresets.MaPairs.Build(22, 1024).ToCompactString());
    }

    [TestMethod]
    public void Cai_And_MaPairs_AgreeOnTheFirstTwelveLayers()
    {
        var cai = LayoutPresets.CharacterAi.Build(24, 1024).ToCompactString().Split('_');
        var pairs = LayoutPresets.MaPairs.Build(24, 1024).ToCompactString().Split('_');
        CollectionAssert.AreEqual(cai[..12], pairs[..12]);
        Assert.AreEqual("0", cai[18]);
        Assert.AreEqual("12", pairs[18]);
    }

    [TestMethod]
    [DataRow(1, "0s")]
    [DataRow(6, "0s_1s_2s_3s_4s_5")]
    [DataRow(12, "0s_1s_2s_3s_4s_5_6s_7s_8s_9s_10s_11")]
    public void Gemma3_GlobalEverySixthLayer(int layers, string expected)
    {
        Assert.AreEqual(expected, LayoutPresets.Gemma3.Build(layers, 1024).ToCompactString());
        var layout = LayoutPresets.Gemma3.Build(34, 1024);
        Assert.IsTrue(layout.Layers.All(l => l.IsOwner && l.IsGlobal == ((l.Layer + 1) % 6 == 0)));
    }

    [TestMethod]
    public void Native_KeepsTheModelsWindows_AndIgnoresTheCommandLine()
    {
        var layers = Enumerable.Range(0, 4)
            .Select(i => new LayerInfo(i, 64, 8, 64, 16, i % 2 == 0 ? 128 : 0, i % 2 == 0 ? WindowSource.Graph : WindowSource.None))
            .ToArray();
        var layout = LayoutParser.Parse("native", new LayoutContext(layers, commandLineWindow: 4096));
        Assert.AreEqual("0s128_1_2s128_3", layout.ToCompactString(withWindows: true));
        Assert.HasCount(4, layout.Owners);
    }

    [TestMethod]
    public void Presets_WithoutAnyWindow_FailNamingTheLayer()
    {
        Throws(() => LayoutParser.Parse("cai", Ctx(13, window: null)), LayoutRule.MissingWindow,
            "preset 'cai' makes layer 1 a sliding owner", "--window");
    }

    [TestMethod]
    public void PresetReaders_TakeTheirOwnersWindow()
    {
        // Model windows differ per layer; readers must not exceed their owner, so they inherit it.
        var layers = Enumerable.Range(0, 7).Select(i => new LayerInfo(i, 8, 8, 64, 1, 100 + i, WindowSource.HfConfig)).ToArray();
        var layout = LayoutPresets.CharacterAi.Build(new LayoutContext(layers));
        Assert.AreEqual("0_1s101_1s101_3s103_3s103_3s103_0", layout.ToCompactString(withWindows: true));
    }

    [TestMethod]
    public void MixPattern_SlidingRunsSplitIntoPairsThenATriple()
    {
        var p = new MixPattern(100, 0, GlobalSharing.None, SlidingSharing.PairsThenTriple);
        string Run(int n) => string.Join('_', p.Map(n).Skip(1).Select(m => m.KvSource));
        Assert.AreEqual("1", Run(2));
        Assert.AreEqual("1_1", Run(3));
        Assert.AreEqual("1_1_1", Run(4));
        Assert.AreEqual("1_1_3_3", Run(5));
        Assert.AreEqual("1_1_3_3_3", Run(6));
        Assert.AreEqual("1_1_3_3_5_5_5", Run(8));
    }

    [TestMethod]
    public void DocsTable_MatchesTheCode()
    {
        var docs = File.ReadAllText(Path.Combine(RepoRoot(), "docs", "layouts.md"));
        var missing = LayoutPresets.All.Select(DocsRow).Where(row => !docs.Contains(row, StringComparison.Ordinal)).ToList();
        Assert.IsEmpty(missing, "docs/layouts.md is out of date; these rows are missing:\n" + string.Join('\n', missing));
    }

    [TestMethod]
    public void UnknownPreset_ListsTheKnownOnes()
    {
        Throws(() => LayoutPresets.Get("yoco"), LayoutRule.UnknownSpec, "unknown layout preset 'yoco'", "native, gemma3, cai, ma-pairs");
    }
}
