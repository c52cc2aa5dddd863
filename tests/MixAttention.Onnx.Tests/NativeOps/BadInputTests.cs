using Microsoft.ML.OnnxRuntime;
using static MixAttention.Onnx.Tests.NativeOps.OpRunner;

namespace MixAttention.Onnx.Tests.NativeOps;

/// <summary>Bad shapes, lengths and attributes give an ORT error naming the input, never a crash.</summary>
[TestClass]
public sealed class BadInputTests
{
    private const int B = 2, Hq = 4, Hkv = 2, D = 8, S = 1;

    private static OnnxRuntimeException RunOwner(int window, int capacity, int[] past, long[]? pastKeyShape = null,
        int queryWidth = Hq * D, int[]? newLengths = null)
    {
        using var session = NativeOpModels.Session(NativeOpModels.Owner(NativeOpModels.Float, new(Hq, Hkv, window), newLengths is not null, unshapedInputs: true));
        var pk = pastKeyShape ?? [B, Hkv, capacity, D];
        var inputs = new List<Input>
        {
            F("query", new float[B * S * queryWidth], B, S, queryWidth),
            F("key", new float[B * S * Hkv * D], B, S, Hkv * D),
            F("value", new float[B * S * Hkv * D], B, S, Hkv * D),
            F("past_key", new float[pk.Aggregate(1L, (a, b) => a * b)], pk),
            F("past_value", new float[B * Hkv * capacity * D], B, Hkv, capacity, D),
            I("past_lengths", past),
        };
        if (newLengths is not null) inputs.Add(I("new_lengths", newLengths));
        return Assert.ThrowsExactly<OnnxRuntimeException>(() => Run(session, [.. inputs]));
    }

    [TestMethod]
    public void WrongCacheRankNamesPastKey()
    {
        var ex = RunOwner(4, 4, [0, 0], pastKeyShape: [B, Hkv, 4 * D]);
        StringAssert.Contains(ex.Message, "'past_key'");
        StringAssert.Contains(ex.Message, "[B, kv_num_heads, C, D]");
    }

    [TestMethod]
    public void MismatchedKvHeadsNamesPastKey()
    {
        var ex = RunOwner(4, 4, [0, 0], pastKeyShape: [B, Hkv + 1, 4, D]);
        StringAssert.Contains(ex.Message, "'past_key' must have shape");
    }

    [TestMethod]
    public void QueryWidthNotDivisibleByHeadsNamesQuery()
    {
        var ex = RunOwner(4, 4, [0, 0], queryWidth: Hq * D + 1);
        StringAssert.Contains(ex.Message, "'query'");
    }

    [TestMethod]
    public void RingSmallerThanWindowIsRejected()
    {
        // A ring smaller than its window is valid while it does not wrap; the step that would wrap is refused.
        var ex = RunOwner(window: 8, capacity: 4, past: [4, 0]);
        StringAssert.Contains(ex.Message, "capacity C=4");
        StringAssert.Contains(ex.Message, "window W=8");
    }

    [TestMethod]
    public void GlobalCacheOverflowNamesPastLengths()
    {
        var ex = RunOwner(window: 0, capacity: 4, past: [1, 4]);
        StringAssert.Contains(ex.Message, "past_lengths[1]=4");
    }

    [TestMethod]
    public void NegativePastLengthIsRejected()
    {
        var ex = RunOwner(window: 4, capacity: 4, past: [-1, 0]);
        StringAssert.Contains(ex.Message, "'past_lengths'[0] = -1");
    }

    [TestMethod]
    public void NewLengthsLongerThanTheChunkAreRejected()
    {
        var ex = RunOwner(window: 4, capacity: 4, past: [0, 0], newLengths: [1, 2]);
        StringAssert.Contains(ex.Message, "'new_lengths'[1] = 2");
    }

    [TestMethod]
    public void WrongPastLengthsShapeNamesIt()
    {
        var ex = RunOwner(window: 4, capacity: 4, past: [0, 0, 0]);
        StringAssert.Contains(ex.Message, "'past_lengths' must have shape [B]");
    }

    [TestMethod]
    public void HeadsThatDoNotDivideFailAtSessionCreation()
    {
        var ex = Assert.ThrowsExactly<OnnxRuntimeException>(() =>
            NativeOpModels.Session(NativeOpModels.Owner(NativeOpModels.Float, new(6, 4, 0))).Dispose());
        StringAssert.Contains(ex.Message, "'num_heads' = 6 must be a multiple of 'kv_num_heads' = 4");
    }
}
