using MixAttention.Onnx.Layouts;

namespace MixAttention.Onnx.Tests.Layouts;

internal static class LayoutTestData
{
    /// <summary>The "MixAttention (Pairs)" layer_types of the LCKV README, for a 22-layer TinyLlama.</summary>
    public const string LckvPairs22 = "0_1s_1s_3s_3s_3s_0_7s_7s_9s_9s_9s_12_13s_13s_15s_15s_15s_12_19s_19s_19s";

    /// <summary>LLM Foundry's test_construct_blocks expectations for the 13-layer Character.AI block_overrides.</summary>
    public const string LlmFoundryCai13 = "0_1s_1s_3s_3s_3s_0_7s_7s_9s_9s_9s_0";

    public static readonly int[] LayerCounts = [1, 2, 5, 6, 7, 13, 22, 24, 32, 48];

    public static LayoutContext Ctx(int layers, int? window = 1024) => LayoutContext.Uniform(layers, window);

    /// <summary>Asserts <paramref name="action"/> throws a <see cref="LayoutException"/> with this rule whose message contains every fragment.</summary>
    public static LayoutException Throws(Action action, LayoutRule rule, params string[] fragments)
    {
        var e = Assert.ThrowsExactly<LayoutException>(action);
        Assert.AreEqual(rule, e.Rule, e.Message);
        foreach (var f in fragments)
            Assert.Contains(f, e.Message);
        return e;
    }

    /// <summary>The markdown row docs/layouts.md has for a preset at 24 layers, window 1024.</summary>
    public static string DocsRow(LayoutPreset preset)
    {
        var layout = preset.Build(24, 1024);
        var globals = layout.Owners.Count(o => layout[o].IsGlobal);
        var sliding = layout.Owners.Count - globals;
        return $"| `{preset.Name}` | `{layout.ToCompactString()}` | {globals} + {sliding} |";
    }

    public static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "MixAttention.Onnx.sln")))
            dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("repository root (MixAttention.Onnx.sln) not found above " + AppContext.BaseDirectory);
    }
}
