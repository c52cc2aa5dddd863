using Microsoft.ML.OnnxRuntime;
using static MixAttention.Onnx.Tests.NativeOps.OpRunner;

namespace MixAttention.Onnx.Tests.NativeOps;

/// <summary>
/// The paged owner through ORT (docs/ops.md, "Paged caches"): the block_table input reaches the CPU kernel, a pool read
/// through a scattered table gives the contiguous cache's output and present rows, and bad tables are ORT errors naming
/// block_table.
/// </summary>
[TestClass]
public sealed class PagedOpTests
{
    private const int B = 2, Hq = 4, Hkv = 2, D = 8, S = 3, Bs = 2, MaxBlocks = 4, Blocks = 9;

    private static readonly NativeOpModels.Attrs Global = new(Hq, Hkv, 0);

    private static float[] Random(int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
    }

    private static Input[] PagedInputs(int[] table, int[] past, int[] news, float[] pool, long[]? tableShape = null) =>
    [
        F("query", Random(B * S * Hq * D, 1), B, S, Hq * D),
        F("key", Random(B * S * Hkv * D, 2), B, S, Hkv * D),
        F("value", Random(B * S * Hkv * D, 3), B, S, Hkv * D),
        F("past_key", pool, Blocks, Hkv, Bs, D),
        F("past_value", pool.Select(x => -x).ToArray(), Blocks, Hkv, Bs, D),
        I("past_lengths", past),
        I("new_lengths", news),
        new Input("block_table", table, tableShape ?? [B, MaxBlocks]),
    ];

    [TestMethod]
    public void PagedOwnerEqualsContiguousOwner()
    {
        // Sequence 0 at positions 3..5 (blocks 7, 2, 5), sequence 1 at 0..1 (block 4); -1 = unused entries.
        int[] table = [7, 2, 5, -1, 4, -1, -1, -1];
        int[] past = [3, 0], news = [3, 2];
        var pool = Random(Blocks * Hkv * Bs * D, 4);
        using var paged = NativeOpModels.Session(NativeOpModels.PagedOwner(Global));
        var p = Run(paged, PagedInputs(table, past, news, pool));

        // The same rows laid out contiguously: [B, Hkv, C = MaxBlocks * Bs, D].
        const int C = MaxBlocks * Bs;
        var ck = new float[B * Hkv * C * D];
        for (int b = 0; b < B; b++)
            for (int pos = 0; pos < C; pos++)
            {
                int blk = table[b * MaxBlocks + pos / Bs];
                if (blk < 0) continue;
                for (int h = 0; h < Hkv; h++)
                    Array.Copy(pool, ((blk * Hkv + h) * Bs + pos % Bs) * D, ck, ((b * Hkv + h) * C + pos) * D, D);
            }
        using var contiguous = NativeOpModels.Session(NativeOpModels.Owner(NativeOpModels.Float, Global, withNewLengths: true));
        var c = Run(contiguous,
            F("query", Random(B * S * Hq * D, 1), B, S, Hq * D),
            F("key", Random(B * S * Hkv * D, 2), B, S, Hkv * D),
            F("value", Random(B * S * Hkv * D, 3), B, S, Hkv * D),
            F("past_key", ck, B, Hkv, C, D),
            F("past_value", ck.Select(x => -x).ToArray(), B, Hkv, C, D),
            I("past_lengths", past),
            I("new_lengths", news));
        float max = 0;
        for (int i = 0; i < c["output"].Length; i++) max = Math.Max(max, Math.Abs(c["output"][i] - p["output"][i]));
        Assert.IsTrue(max <= 1e-6f, $"max |paged - contiguous| = {max}");
        // The appended rows landed in the table's blocks.
        var presentPool = p["present_key"];
        var presentContiguous = c["present_key"];
        for (int b = 0; b < B; b++)
            for (int pos = 0; pos < past[b] + news[b]; pos++)
                for (int h = 0; h < Hkv; h++)
                    for (int d = 0; d < D; d++)
                        Assert.AreEqual(presentContiguous[((b * Hkv + h) * C + pos) * D + d],
                            presentPool[((table[b * MaxBlocks + pos / Bs] * Hkv + h) * Bs + pos % Bs) * D + d], $"b {b} pos {pos}");
    }

    [TestMethod]
    public void EntryOutsideThePoolNamesBlockTable()
    {
        using var session = NativeOpModels.Session(NativeOpModels.PagedOwner(Global));
        var ex = Assert.ThrowsExactly<OnnxRuntimeException>(() => Run(session, PagedInputs([7, 9, -1, -1, 4, -1, -1, -1], [3, 0], [1, 2], new float[Blocks * Hkv * Bs * D])));
        StringAssert.Contains(ex.Message, "'block_table'[0, 1] = 9");
        StringAssert.Contains(ex.Message, "num_blocks=9");
    }

    [TestMethod]
    public void TooFewBlocksAndSlidingOwnersAndBadShapesAreRefused()
    {
        var pool = new float[Blocks * Hkv * Bs * D];
        using var session = NativeOpModels.Session(NativeOpModels.PagedOwner(Global));
        var ex = Assert.ThrowsExactly<OnnxRuntimeException>(() => Run(session, PagedInputs([0, 1, 2, 3, 4, -1, -1, -1], [7, 0], [3, 1], pool)));
        StringAssert.Contains(ex.Message, "sequence 0 needs 5 blocks");
        ex = Assert.ThrowsExactly<OnnxRuntimeException>(() => Run(session, PagedInputs([0, 1, 2, 3], [0, 0], [1, 1], pool, tableShape: [1, 4])));
        StringAssert.Contains(ex.Message, "'block_table' must have shape [B, max_blocks_per_seq >= 1]");
        using var sliding = NativeOpModels.Session(NativeOpModels.PagedOwner(Global with { Window = 4 }));
        ex = Assert.ThrowsExactly<OnnxRuntimeException>(() => Run(sliding, PagedInputs([0, -1, -1, -1, 1, -1, -1, -1], [0, 0], [1, 1], pool)));
        StringAssert.Contains(ex.Message, "only global (window 0) owner caches may be paged");
    }
}
