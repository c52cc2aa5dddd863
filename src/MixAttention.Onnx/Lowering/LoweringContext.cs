using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Graph;
using MixAttention.Onnx.Layouts;
using MixAttention.Onnx.Onnx.Proto;
using static MixAttention.Onnx.Graph.GraphBuilder;

namespace MixAttention.Onnx.Lowering;

/// <summary>
/// Shared state of one lowering run: the graph, the sites and layout, and values several layers share
/// (past lengths, positions, step length, window masks), created once on first use.
/// </summary>
internal sealed class LoweringContext
{
    private readonly Dictionary<string, string> _shared = new(StringComparer.Ordinal);

    /// <summary>Creates the context.</summary>
    public LoweringContext(ModelGraph graph, IReadOnlyList<AttentionSite> sites, MixAttentionLayout layout)
    {
        Graph = graph;
        Sites = sites;
        Layout = layout;
        Builder = new GraphBuilder(graph, "mixattn");
        InputIds = graph.Proto.Input.FirstOrDefault(i => i.Name == "input_ids")?.Name
            ?? graph.Proto.Input.FirstOrDefault(i => graph.IsGraphInput(i.Name) && i.Type?.TensorType?.ElemType == (int)TensorProto.Types.DataType.Int64 && i.Type.TensorType.Shape?.Dim.Count == 2)?.Name
            ?? throw new MixAttentionException("the model has no 'input_ids' input (int64 [batch, sequence]); cannot lower it.");
        var batchDim = graph.Proto.Input.First(i => i.Name == InputIds).Type?.TensorType?.Shape?.Dim.FirstOrDefault();
        BatchDim = batchDim is { DimParam.Length: > 0 } ? batchDim.DimParam : "batch_size";
    }

    /// <summary>The graph being rewritten.</summary>
    public ModelGraph Graph { get; }
    /// <summary>Sites, index = layer.</summary>
    public IReadOnlyList<AttentionSite> Sites { get; }
    /// <summary>The layout being applied.</summary>
    public MixAttentionLayout Layout { get; }
    /// <summary>Builder for new nodes.</summary>
    public GraphBuilder Builder { get; }
    /// <summary>The token ids input.</summary>
    public string InputIds { get; }
    /// <summary>Symbolic name of the batch axis.</summary>
    public string BatchDim { get; }

    /// <summary>Gets or creates a value shared across layers.</summary>
    public string Shared(string key, Func<string> create)
    {
        if (!_shared.TryGetValue(key, out var v))
            _shared[key] = v = create();
        return v;
    }

    /// <summary>The <c>past_lengths</c> graph input (int32 [B]): tokens each sequence processed before this step.</summary>
    public string PastLengths => Shared("past_lengths", () =>
    {
        const string name = "past_lengths";
        Graph.AddGraphInput(TensorInfo(name, (int)TensorProto.Types.DataType.Int32, BatchDim));
        return name;
    });

    /// <summary>The <c>new_lengths</c> graph input (int32 [B]): real tokens of each sequence in this step (the rest is right padding).</summary>
    public string NewLengths => Shared("new_lengths", () =>
    {
        const string name = "new_lengths";
        Graph.AddGraphInput(TensorInfo(name, (int)TensorProto.Types.DataType.Int32, BatchDim));
        return name;
    });

    /// <summary>Rows per block when global caches are paged (<c>convert --paged</c>); null = contiguous caches.</summary>
    public int? PagedBlockSize { get; init; }

    /// <summary>True when <paramref name="owner"/>'s cache is a paged block pool (a global owner of a paged conversion).</summary>
    public bool IsPaged(int owner) => PagedBlockSize is not null && !Layout[owner].IsSliding;

    /// <summary>Symbolic name of the pool axis (dimension 0) of paged caches.</summary>
    public const string PoolBlocksDim = "num_kv_blocks";

    /// <summary>The <c>block_table</c> graph input (int32 [B, max_blocks_per_seq]) of paged caches (docs/ops.md, "Paged caches").</summary>
    public string BlockTable => Shared("block_table", () =>
    {
        const string name = "block_table";
        Graph.AddGraphInput(TensorInfo(name, (int)TensorProto.Types.DataType.Int32, BatchDim, "max_blocks_per_seq"));
        return name;
    });

    /// <summary>The quantized owners' caches: their element type, scales and the scale initializers' names (filled by <see cref="LayoutLowering"/>).</summary>
    public Dictionary<int, (CacheQuantization Format, string KeyScale, string ValueScale)> Quantized { get; } = new();

    /// <summary>The quantization of <paramref name="owner"/>'s cache, or null for a float cache.</summary>
    public (CacheQuantization Format, string KeyScale, string ValueScale)? QuantizationOf(int owner) =>
        Quantized.TryGetValue(owner, out var q) ? q : null;

    /// <summary>S, the step length, as an int64 1-element tensor.</summary>
    public string StepLength => Shared("step_length", () =>
        Builder.ShapeSlice("step_length", InputIds, 1, 2));
}
