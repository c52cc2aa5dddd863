using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MixAttention.Onnx.Runtime;

namespace MixAttention.Onnx.Tests.Runtime;

/// <summary>Logits read back each step: the vectorised fp16 / bf16 → float conversion against ORT's scalar one.</summary>
[TestClass]
public sealed class StepIoTests
{
    // Every 16-bit pattern (NaN, ±Inf, subnormals, ±0 included) in a [2, 3, V] tensor with V not a multiple of any
    // vector width, so the vector loops and their scalar tails both run; each row is read back on its own.
    private const int Vocab = 65536 / 6 + 7;

    [TestMethod]
    public void Float16LogitsConvertLikeOrtsScalarConversion()
    {
        var bits = AllPatterns();
        var values = bits.Select(b => new Float16(b)).ToArray();
        using var logits = OrtValue.CreateTensorValueFromMemory(values, [2, 3, Vocab]);
        AssertRows(logits, i => (float)values[i]);
    }

    [TestMethod]
    public void BFloat16LogitsConvertLikeOrtsScalarConversion()
    {
        var bits = AllPatterns();
        var values = bits.Select(b => new BFloat16(b)).ToArray();
        using var logits = OrtValue.CreateTensorValueFromMemory(values, [2, 3, Vocab]);
        AssertRows(logits, i => (float)values[i]);
    }

    /// <summary>The reused all-ones mask: exactly the shape asked for, int64 or int32, still all ones after growing.</summary>
    [TestMethod]
    public void OnesMaskGivesTheShapeAskedForOverOneReusedBuffer()
    {
        var mask = new StepIo.OnesMask();
        foreach (var (rows, total) in new[] { (2, 5), (3, 40), (1, 7), (16, 1000) })
        {
            using var v64 = mask.Create(TensorElementType.Int64, rows, total);
            CollectionAssert.AreEqual(new long[] { rows, total }, v64.GetTensorTypeAndShape().Shape);
            var data = v64.GetTensorDataAsSpan<long>();
            Assert.AreEqual(rows * total, data.Length);
            Assert.IsTrue(data.ToArray().All(x => x == 1L));
            using var v32 = mask.Create(TensorElementType.Int32, rows, total);
            Assert.AreEqual(TensorElementType.Int32, v32.GetTensorTypeAndShape().ElementDataType);
            Assert.IsTrue(v32.GetTensorDataAsSpan<int>().ToArray().All(x => x == 1));
        }
        // Same or smaller masks allocate nothing new.
        mask.Create(TensorElementType.Int64, 16, 1000).Dispose();
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10; i++) mask.Create(TensorElementType.Int64, 16, 900 + i).Dispose();
        Assert.IsLessThan(16 * 900 * 8, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.ThrowsExactly<MixAttention.Onnx.MixAttentionException>(() => mask.Create(TensorElementType.Float, 1, 1));
    }

    private static ushort[] AllPatterns() => Enumerable.Range(0, 6 * Vocab).Select(i => (ushort)(i * 40503 % 65536)).ToArray();

    private static void AssertRows(OrtValue logits, Func<int, float> expected)
    {
        for (int row = 0; row < 2; row++)
        {
            var got = StepIo.Rows(logits, row, 1, 2); // positions 1..2 of this row
            Assert.AreEqual(2 * Vocab, got.Length);
            for (int j = 0; j < got.Length; j++)
            {
                int flat = (row * 3 + 1) * Vocab + j;
                float want = expected(flat);
                if (float.IsNaN(want)) Assert.IsTrue(float.IsNaN(got[j]), $"row {row} element {j}: NaN expected, got {got[j]}");
                else Assert.AreEqual(BitConverter.SingleToInt32Bits(want), BitConverter.SingleToInt32Bits(got[j]), $"row {row} element {j}: {want} expected, got {got[j]}");
            }
        }
    }
}
