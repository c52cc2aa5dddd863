using Google.Protobuf;
using MixAttention.Onnx.Onnx.Proto;
using MixAttention.Onnx.Runtime.Native;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Bench;

/// <summary>Single-node decode models: our WindowedAttention and ORT's GroupQueryAttention (fp32).</summary>
internal static class BenchModels
{
    private const int Float = 1, Int32 = 6;

    /// <param name="paged">The caches are block pools read through an int32 <c>block_table</c> [B, blocks] input
    /// (docs/ops.md, "Paged caches"; the optional inputs between stay empty).</param>
    public static byte[] Ours(int heads, int kvHeads, int window, bool paged = false)
    {
        var node = new NodeProto { OpType = OpSpec.WindowedAttention, Domain = OpSpec.Domain, Name = "attn" };
        node.Input.AddRange(["query", "key", "value", "past_key", "past_value", "past_lengths"]);
        if (paged) node.Input.AddRange(["", "", "", "", "", "block_table"]);
        node.Output.AddRange(["output", "present_key", "present_value"]);
        node.Attribute.Add(Int(OpSpec.AttrNumHeads, heads));
        node.Attribute.Add(Int(OpSpec.AttrKvNumHeads, kvHeads));
        node.Attribute.Add(Int(OpSpec.AttrWindow, window));
        var g = new GraphProto { Name = "ours" };
        g.Node.Add(node);
        foreach (var (n, r) in new[] { ("query", 3), ("key", 3), ("value", 3), ("past_key", 4), ("past_value", 4) }) g.Input.Add(Value(n, Float, r));
        g.Input.Add(Value("past_lengths", Int32, 1));
        if (paged) g.Input.Add(Value("block_table", Int32, 2));
        g.Output.Add(Value("output", Float, 3));
        g.Output.Add(Value("present_key", Float, 4));
        g.Output.Add(Value("present_value", Float, 4));
        return Model(g, (OpSpec.Domain, OpSpec.OpsetVersion)).ToByteArray();
    }

    public static byte[] Gqa(int heads, int kvHeads, int localWindow, bool slidingWindowCache)
    {
        var node = new NodeProto { OpType = "GroupQueryAttention", Domain = "com.microsoft", Name = "gqa" };
        node.Input.AddRange(["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length"]);
        node.Output.AddRange(["output", "present_key", "present_value"]);
        node.Attribute.Add(Int(OpSpec.AttrNumHeads, heads));
        node.Attribute.Add(Int(OpSpec.AttrKvNumHeads, kvHeads));
        node.Attribute.Add(Int("local_window_size", localWindow));
        if (slidingWindowCache) node.Attribute.Add(Int("sliding_window_cache", 1));
        var g = new GraphProto { Name = "gqa" };
        g.Node.Add(node);
        foreach (var (n, r) in new[] { ("query", 3), ("key", 3), ("value", 3), ("past_key", 4), ("past_value", 4) }) g.Input.Add(Value(n, Float, r));
        g.Input.Add(Value("seqlens_k", Int32, 1));
        g.Input.Add(Value("total_sequence_length", Int32, 0));
        g.Output.Add(Value("output", Float, 3));
        g.Output.Add(Value("present_key", Float, 4));
        g.Output.Add(Value("present_value", Float, 4));
        return Model(g, ("com.microsoft", 1)).ToByteArray();
    }

    private static AttributeProto Int(string name, long v) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = v };

    private static ValueInfoProto Value(string name, int elemType, int rank)
    {
        var shape = new TensorShapeProto();
        for (int i = 0; i < rank; i++) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = $"{name}_{i}" });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = elemType, Shape = shape } } };
    }

    private static ModelProto Model(GraphProto g, (string Domain, long Version) extra)
    {
        var m = new ModelProto { IrVersion = 10, ProducerName = "mixattn-bench", Graph = g };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = extra.Domain, Version = extra.Version });
        return m;
    }
}
