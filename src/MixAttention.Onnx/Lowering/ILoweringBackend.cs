using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Layouts;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Lowering;

/// <summary>
/// One lowering target. A backend turns each attention site into its own attention nodes; the shared
/// pass (<see cref="LayoutLowering"/>) handles graph inputs/outputs, dead code and the cache plan.
/// </summary>
internal interface ILoweringBackend
{
    /// <summary>Name used on the command line and in the cache plan: ops, ort-gqa, reference.</summary>
    string Name { get; }

    /// <summary>Checks that the backend can express the layout; throws <see cref="MixAttentionException"/> saying what it cannot do.</summary>
    void Check(LoweringContext ctx);

    /// <summary>How an owner's cache capacity is chosen.</summary>
    CapacityRule Capacity(LayerAssignment owner);

    /// <summary>Symbolic name of the cache's sequence axis on the past input and on the present output of an owner.</summary>
    (string Past, string Present) CacheAxis(LayerAssignment owner);

    /// <summary>
    /// Dimensions of a paged owner's pool tensors (past and present): ours are head-major
    /// <c>[num_blocks, Hkv, block_size, D]</c> (docs/ops.md, "Paged caches").
    /// </summary>
    object[] PoolShape(AttentionSite site, int blockSize) =>
        new object[] { LoweringContext.PoolBlocksDim, (long)site.KvNumHeads, (long)blockSize, (long)site.HeadSize };

    /// <summary>
    /// Lowers one site. For an owner, <paramref name="cache"/> holds its past graph inputs; for a reader,
    /// the owner's present values (already lowered: owners come first).
    /// </summary>
    LoweredSite Lower(LoweringContext ctx, AttentionSite site, LayerAssignment assignment, (string Key, string Value) cache);
}
