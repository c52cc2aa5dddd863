using CsCheck;
using MixAttention.Onnx.Layouts;

namespace MixAttention.Onnx.Tests.Layouts;

[TestClass]
public sealed class PropertyTests
{
    private static readonly int[] Windows = [16, 64, 1024];

    /// <summary>A valid layout built from one random number per layer.</summary>
    private static MixAttentionLayout Build(int[] seeds)
    {
        var layers = new List<LayerAssignment>();
        var owners = new List<int>();
        for (var i = 0; i < seeds.Length; i++)
        {
            var r = seeds[i];
            if (owners.Count == 0 || r % 3 == 0)
            {
                var window = (r / 3) % 2 == 0 ? 0 : Windows[(r / 6) % Windows.Length];
                layers.Add(new LayerAssignment(i, i, window));
                owners.Add(i);
                continue;
            }
            var owner = layers[owners[(r / 3) % owners.Count]];
            var allowed = owner.IsGlobal ? [0] : Windows.Where(w => w <= owner.Window).ToArray();
            layers.Add(new LayerAssignment(i, owner.Layer, allowed[(r / 7) % allowed.Length]));
        }
        return new MixAttentionLayout(layers);
    }

    /// <summary>The same layout with every sliding layer at window <paramref name="w"/> (still valid).</summary>
    private static MixAttentionLayout WithWindow(MixAttentionLayout layout, int w) =>
        new(layout.Layers.Select(l => l with { Window = l.IsSliding ? w : 0 }));

    private static readonly Gen<MixAttentionLayout> ValidLayout =
        from n in Gen.Int[1, 48]
        from seeds in Gen.Int[0, 1_000_000].Array[n]
        select Build(seeds);

    [TestMethod]
    public void ValidLayout_ToCompactWithWindows_ParsesBackToTheSameLayout()
    {
        ValidLayout.Sample(layout =>
        {
            var ctx = LayoutContext.Uniform(layout.Count);
            LayoutValidator.Validate(layout, ctx);
            var again = LayoutParser.Parse(layout.ToCompactString(withWindows: true), ctx);
            return again.HasSameAssignments(layout);
        }, iter: 2000, print: l => l.ToCompactString(withWindows: true));
    }

    [TestMethod]
    public void UniformWindowLayout_ToCompact_ParsesBackWithTheWindowOption()
    {
        (from n in Gen.Int[1, 48]
         from seeds in Gen.Int[0, 1_000_000].Array[n]
         from w in Gen.Int[1, 8192]
         select (Layout: WithWindow(Build(seeds), w), Window: w))
        .Sample(t =>
        {
            var ctx = LayoutContext.Uniform(t.Layout.Count, t.Window);
            var again = LayoutParser.Parse(t.Layout.ToCompactString(), ctx);
            return again.HasSameAssignments(t.Layout) && LayoutJson.Read(t.Layout.ToJson()).HasSameAssignments(t.Layout);
        }, iter: 1000);
    }

    private static readonly Gen<string> Garbage = Gen.OneOf(
        Gen.Char["0123456789s_-x {}[]\":,./\\"].Array[0, 40].Select(c => new string(c)),
        Gen.String,
        Gen.Char["0123456789s_"].Array[0, 40].Select(c => new string(c)),
        Gen.Char["{}[]\":,0123456789 versionlayerskvwindow"].Array[0, 60].Select(c => "{" + new string(c)));

    [TestMethod]
    public void Garbage_OnlyEverThrowsLayoutException()
    {
        var ctx = LayoutContext.Uniform(4, 128);
        Garbage.Sample(s =>
        {
            try
            {
                var layout = LayoutParser.Parse(s, ctx);
                LayoutValidator.Validate(layout, ctx); // anything returned is valid
            }
            catch (LayoutException e)
            {
                Assert.IsFalse(string.IsNullOrWhiteSpace(e.Message));
            }
        }, iter: 5000);
    }
}
