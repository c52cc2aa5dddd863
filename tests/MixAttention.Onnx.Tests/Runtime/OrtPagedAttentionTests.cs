using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Plan;
using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Runtime;

/// <summary>
/// <c>convert --backend ort-gqa --paged</c>: a full-attention model on ORT's own <c>PagedAttention</c> (the paged anchor of
/// issue 19). ORT implements that op on CUDA only, so these tests check the graph, the plan and the runtime's side of the
/// contract (token-major pools, the scratch block for filler rows); the GPU run is <c>tools/gpu/e2e/e2e.sh paged</c>.
/// </summary>
[TestClass]
public sealed class OrtPagedAttentionTests
{
    // PagedAttention takes fp16 / bf16: the fp16 GenAI-style fixture.
    private const string Source = "qwen35-gqa-fp16";

    private static string Convert(string layout, string source = Source, int blockSize = 256) =>
        ZooFixtures.Convert(TestPaths.Fixture(source), layout, "ort-gqa", layout == "cai" ? 4 : null, o => o with { PagedBlockSize = blockSize });

    [TestMethod]
    public void EveryLayerBecomesPagedAttentionOverTokenMajorPools()
    {
        var path = Convert("native");
        var model = OnnxModel.Load(path);
        var plan = CachePlan.FromModel(model.Proto)!;
        Assert.AreEqual(BackendName.OrtGqa, plan.Backend);
        Assert.IsTrue(plan.TokenMajorPools);
        Assert.AreEqual("block_table", plan.BlockTable);
        Assert.AreEqual("past_lengths", plan.PastLengths);
        Assert.IsNull(plan.NewLengths, "PagedAttention takes no per-row token counts: every row of a step holds S tokens");
        Assert.AreEqual(2, plan.Caches.Count);
        var graph = model.Proto.Graph;
        long sourceRotary = OnnxModel.Load(TestPaths.Fixture(Source)).Proto.Graph.Node.First(n => n.OpType == "GroupQueryAttention")
            .Attribute.FirstOrDefault(a => a.Name == "do_rotary")?.I ?? 0;
        var paged = graph.Node.Where(n => n.OpType == "PagedAttention").ToList();
        Assert.AreEqual(2, paged.Count, "one per layer");
        Assert.IsFalse(graph.Node.Any(n => n.OpType == "GroupQueryAttention"), "no GQA left");
        foreach (var c in plan.Caches)
        {
            Assert.AreEqual(256, c.BlockSize);
            var input = graph.Input.Single(i => i.Name == c.PastKey);
            var dims = input.Type.TensorType.Shape.Dim;
            Assert.AreEqual("num_kv_blocks", dims[0].DimParam);
            CollectionAssert.AreEqual(new long[] { 256, c.KvNumHeads, c.HeadSize }, dims.Skip(1).Select(d => d.DimValue).ToArray(), "[blocks, block_size, Hkv, D]");
            var node = paged.Single(n => n.Input[3] == c.PastKey);
            Assert.AreEqual(c.PastValue, node.Input[4]);
            Assert.AreEqual("past_lengths", node.Input[6]);
            Assert.AreEqual("block_table", node.Input[7]);
            Assert.AreEqual(c.KvNumHeads, node.Attribute.Single(a => a.Name == "kv_num_heads").I);
            Assert.AreEqual(sourceRotary, node.Attribute.Single(a => a.Name == "do_rotary").I, "the source's fused rotary (or none) stays with the op");
        }
        // The cumulative lengths are computed once and shared: 0, S, ..., B·S.
        Assert.AreEqual(1, paged.Select(n => n.Input[5]).Distinct().Count());
        Assert.IsTrue(graph.Node.Any(n => n.OpType == "Range" && n.Output[0] != paged[0].Input[5]), "Range, then a Cast to int32");
    }

    [TestMethod]
    public void LayoutsWithReadersOrWindowsAreRefused()
    {
        var e = Assert.ThrowsExactly<MixAttentionException>(() => Convert("cai"));
        StringAssert.Contains(e.Message, "PagedAttention, which has no shared-KV readers");
        StringAssert.Contains(e.Message, "--backend ops");
        var fp32 = Assert.ThrowsExactly<MixAttentionException>(() => Convert("native", "llama-gqa"));
        StringAssert.Contains(fp32.Message, "PagedAttention takes fp16 or bf16");
        var small = Assert.ThrowsExactly<MixAttentionException>(() => Convert("native", blockSize: 64));
        StringAssert.Contains(small.Message, "pages of a multiple of 256");
    }

    [TestMethod]
    public void OnTheCpuItIsAClearErrorAndTheCheckIsStructural()
    {
        var path = Convert("native");
        var e = Assert.ThrowsExactly<MixAttentionException>(() => MixAttentionModel.Open(path));
        StringAssert.Contains(e.Message, "CUDA only");
        StringAssert.Contains(e.Message, "PagedAttention");
        var report = ConversionCheck.Run(TestPaths.Fixture(Source), path, ConversionCheckMode.Compare);
        Assert.AreEqual(ConversionCheckMode.Structure, report.Done);
        StringAssert.Contains(report.Why, "PagedAttention");
    }

    [TestMethod]
    public void TheSessionsPoolsAreTokenMajorWithOneScratchBlock()
    {
        var plan = CachePlan.FromModel(OnnxModel.Load(Convert("native")).Proto)!;
        var config = new SessionConfig { MaxBatch = 2, MaxLength = 512, PrefillChunk = 8, KvBlocks = 10 };
        using var caches = new KvCacheSet(plan, config, ExecutionDevice.Cpu, null, Microsoft.ML.OnnxRuntime.OrtMemoryInfo.DefaultInstance);
        Assert.AreEqual(10, caches.TotalBlocks);
        Assert.AreEqual(1, caches.ScratchBlocks);
        Assert.AreEqual(11 * caches.BytesPerBlock, caches.AllocatedBytes, "the scratch block is allocated, and counted");
        foreach (var c in caches.Caches)
            CollectionAssert.AreEqual(new long[] { 11, 256, c.Entry.KvNumHeads, c.Entry.HeadSize }, c.Shape(rows: 2), "[blocks, block_size, Hkv, D]");
    }

    [TestMethod]
    public void RowsWithoutABlockWriteToTheScratchBlock()
    {
        var pool = new KvBlockPool(totalBlocks: 6, blockSize: 4, maxBlocksPerSequence: 3, slots: 2, scratch: true);
        Assert.AreEqual(7, pool.PhysicalBlocks);
        Assert.AreEqual(6, pool.ScratchBlock);
        pool.Grow(0, 5); // two blocks
        var rows = pool.TableRows(0, 2);
        CollectionAssert.AreEqual(new[] { 0, 1, 6, 6, 6, 6 }, rows, "slot 0's blocks, then the scratch block everywhere else");
        Assert.AreEqual(4, pool.FreeBlocks, "the scratch block is never handed out");
        var plain = new KvBlockPool(totalBlocks: 6, blockSize: 4, maxBlocksPerSequence: 3, slots: 1);
        Assert.AreEqual(6, plain.PhysicalBlocks);
        CollectionAssert.AreEqual(new[] { -1, -1, -1 }, plain.TableRows(0, 1));
    }
}
