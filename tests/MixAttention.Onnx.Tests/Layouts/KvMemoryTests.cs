using MixAttention.Onnx.Layouts;
using static MixAttention.Onnx.Tests.Layouts.LayoutTestData;

namespace MixAttention.Onnx.Tests.Layouts;

[TestClass]
public sealed class KvMemoryTests
{
    // Uniform context: kv heads 8, head size 128, float16 → 2 × 8 × 128 × 2 = 4096 bytes per token per cache.
    private const long PerToken = 4096;

    [TestMethod]
    public void BytesPerToken_IsTwoTimesKvHeadsTimesHeadSizeTimesElementSize()
    {
        Assert.AreEqual(PerToken, KvMemory.BytesPerToken(Ctx(1).Layers[0]));
        Assert.AreEqual(2L * 1 * 64 * 4, KvMemory.BytesPerToken(new LayerInfo(0, 4, 1, 64, 1)));
    }

    [TestMethod]
    public void LckvPairs_At32K_CountsOwnersOnly()
    {
        const long t = 32768;
        var ctx = Ctx(22);
        var layout = LayoutParser.Parse(LckvPairs22, ctx);
        // Owners: global 0 and 12 (T each), sliding 1, 3, 7, 9, 13, 15, 19 (1024 each).
        var expected = (2 * t + 7 * 1024) * PerToken;
        Assert.AreEqual(expected, KvMemory.Layout(layout, ctx, t));
        var estimate = KvMemory.Estimate(layout, ctx, t);
        Assert.AreEqual(22 * t * PerToken, estimate.UnconvertedBytes);
        Assert.AreEqual(22.0 * t / (2 * t + 7 * 1024), estimate.Reduction, 1e-9);
        Assert.HasCount(9, estimate.Owners);
        Assert.AreEqual(new OwnerBytes(0, 0, t, 1, t * PerToken), estimate.Owners[0]);
        Assert.AreEqual(new OwnerBytes(19, 1024, 1024, 2, 1024 * PerToken), estimate.Owners[^1]);
    }

    [TestMethod]
    public void ShortContexts_CapSlidingOwnersAtT()
    {
        var ctx = Ctx(2);
        var layout = LayoutParser.Parse("0_1s", ctx);
        Assert.AreEqual(2 * 100 * PerToken, KvMemory.Layout(layout, ctx, 100));
    }

    [TestMethod]
    public void PrefillChunk_AddsSlack_OnlyToSlidingOwnersWithReaders()
    {
        var ctx = Ctx(4);
        var layout = LayoutParser.Parse("0_1s_1s_3s", ctx);
        var owners = KvMemory.Owners(layout, ctx, 100_000, prefillChunk: 256);
        Assert.AreEqual(100_000, owners[0].Capacity);
        Assert.AreEqual(1024 + 255, owners[1].Capacity);
        Assert.AreEqual(1024, owners[2].Capacity);
    }

    [TestMethod]
    public void Unconverted_CountsFullT_UnlessAskedToHonourModelWindows()
    {
        var ctx = LayoutContext.Uniform(4, modelWindow: 512);
        Assert.AreEqual(4 * 8192 * PerToken, KvMemory.Unconverted(ctx, 8192));
        Assert.AreEqual(4 * 512 * PerToken, KvMemory.Unconverted(ctx, 8192, honourModelWindows: true));
        // native on an all-SWA model is exact and holds only the windows.
        Assert.AreEqual(4 * 512 * PerToken, KvMemory.Layout(LayoutPresets.Native.Build(ctx), ctx, 8192));
    }

    [TestMethod]
    public void ElementSizes()
    {
        Assert.AreEqual(4, KvMemory.ElementSize(1));
        Assert.AreEqual(2, KvMemory.ElementSize(10));
        Assert.AreEqual(2, KvMemory.ElementSize(16));
        Assert.AreEqual(1, KvMemory.ElementSize(3));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => KvMemory.ElementSize(8));
    }
}
