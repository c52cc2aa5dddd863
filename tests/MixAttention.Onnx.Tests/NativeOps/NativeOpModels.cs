using Google.Protobuf;
using MixAttention.Onnx.Onnx.Proto;
using MixAttention.Onnx.Runtime.Native;
using Microsoft.ML.OnnxRuntime;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Tests.NativeOps;

/// <summary>Single-op ONNX models for the native op tests, built with the proto classes.</summary>
internal static class NativeOpModels
{
    public const int Float = 1, Int32 = 6, Float16 = 10, BFloat16 = 16;

    public static readonly string[] OwnerInputs = [.. OpSpec.OwnerInputs.Take(7)]; // without the cos/sin caches
    public static readonly string[] OwnerOutputs = [.. OpSpec.OwnerOutputs];

    /// <summary>Attributes shared by both ops.</summary>
    public sealed record Attrs(int NumHeads, int KvNumHeads, int Window, float Scale = 0f, float Softcap = 0f);

    /// <summary>One <c>WindowedAttention</c> node; every dim symbolic so the op's own checks run.</summary>
    /// <param name="unshapedInputs">Declare inputs without a shape, so even a wrong rank reaches the op.</param>
    public static ModelProto Owner(int elemType, Attrs attrs, bool withNewLengths = false, bool unshapedInputs = false)
    {
        var node = Node(OpSpec.WindowedAttention, OpSpec.Domain, withNewLengths ? OwnerInputs : OwnerInputs[..6], OwnerOutputs, attrs);
        var graph = new GraphProto { Name = "owner" };
        graph.Node.Add(node);
        AddOwnerIo(graph, elemType, withNewLengths);
        if (unshapedInputs)
            foreach (var input in graph.Input) input.Type.TensorType.Shape = null;
        foreach (var o in OwnerOutputs) graph.Output.Add(Value(o, elemType, o == "output" ? 3 : 4));
        return Model(graph);
    }

    /// <summary>
    /// One paged <c>WindowedAttention</c> node (docs/ops.md, "Paged caches"): new_lengths, "" for the absent rotary caches
    /// and scales, then <c>block_table</c>; the caches are pools <c>[num_blocks, Hkv, bs, D]</c>.
    /// </summary>
    public static ModelProto PagedOwner(Attrs attrs)
    {
        var node = Node(OpSpec.WindowedAttention, OpSpec.Domain, [.. OwnerInputs, "", "", "", "", "block_table"], OwnerOutputs, attrs);
        var graph = new GraphProto { Name = "paged_owner" };
        graph.Node.Add(node);
        AddOwnerIo(graph, Float, withNewLengths: true);
        graph.Input.Add(Value("block_table", Int32, 2));
        foreach (var o in OwnerOutputs) graph.Output.Add(Value(o, Float, o == "output" ? 3 : 4));
        return Model(graph);
    }

    /// <summary>One <c>SharedKvAttention</c> node.</summary>
    public static ModelProto Reader(int elemType, Attrs attrs, bool withNewLengths = false)
    {
        string[] inputs = withNewLengths
            ? ["query", "key_cache", "value_cache", "past_lengths", "new_lengths"]
            : ["query", "key_cache", "value_cache", "past_lengths"];
        var graph = new GraphProto { Name = "reader" };
        graph.Node.Add(Node(OpSpec.SharedKvAttention, OpSpec.Domain, inputs, ["output"], attrs));
        graph.Input.Add(Value("query", elemType, 3));
        graph.Input.Add(Value("key_cache", elemType, 4));
        graph.Input.Add(Value("value_cache", elemType, 4));
        graph.Input.Add(Value("past_lengths", Int32, 1));
        if (withNewLengths) graph.Input.Add(Value("new_lengths", Int32, 1));
        graph.Output.Add(Value("output", elemType, 3));
        return Model(graph);
    }

    /// <summary>
    /// An owner and a reader over the owner's present caches, both rotating with the op's own rotary: inputs
    /// <c>cos_cache</c> / <c>sin_cache</c> (after <c>new_lengths</c>) and <c>rotary_interleaved</c>. The cos/sin inputs
    /// can be left out one at a time (<paramref name="withCos"/>, <paramref name="withSin"/>) for the error tests.
    /// </summary>
    public static ModelProto RotaryOwnerThenReader(Attrs owner, Attrs reader, bool interleaved, bool withCos = true, bool withSin = true)
    {
        string cos = withCos ? "cos_cache" : "", sin = withSin ? "sin_cache" : "";
        var graph = new GraphProto { Name = "rotary_owner_reader" };
        var o = Node(OpSpec.WindowedAttention, OpSpec.Domain, [.. OwnerInputs, cos, sin], OwnerOutputs, owner);
        var r = Node(OpSpec.SharedKvAttention, OpSpec.Domain,
            ["reader_query", "present_key", "present_value", "past_lengths", "new_lengths", cos, sin], ["reader_output"], reader);
        foreach (var n in new[] { o, r }) n.Attribute.Add(IntAttr(OpSpec.AttrRotaryInterleaved, interleaved ? 1 : 0));
        graph.Node.Add(o);
        graph.Node.Add(r);
        AddOwnerIo(graph, Float, withNewLengths: true);
        graph.Input.Add(Value("reader_query", Float, 3));
        if (withCos) graph.Input.Add(Value("cos_cache", Float, 2));
        if (withSin) graph.Input.Add(Value("sin_cache", Float, 2));
        foreach (var name in OwnerOutputs) graph.Output.Add(Value(name, Float, name == "output" ? 3 : 4));
        graph.Output.Add(Value("reader_output", Float, 3));
        return Model(graph);
    }

    /// <summary><see cref="OwnerThenReader"/> with <c>new_lengths</c> given to both ops (float).</summary>
    public static ModelProto OwnerThenReaderWithNewLengths(Attrs owner, Attrs reader)
    {
        var graph = new GraphProto { Name = "owner_reader_newlengths" };
        graph.Node.Add(Node(OpSpec.WindowedAttention, OpSpec.Domain, OwnerInputs, OwnerOutputs, owner));
        graph.Node.Add(Node(OpSpec.SharedKvAttention, OpSpec.Domain,
            ["reader_query", "present_key", "present_value", "past_lengths", "new_lengths"], ["reader_output"], reader));
        AddOwnerIo(graph, Float, withNewLengths: true);
        graph.Input.Add(Value("reader_query", Float, 3));
        foreach (var o in OwnerOutputs) graph.Output.Add(Value(o, Float, o == "output" ? 3 : 4));
        graph.Output.Add(Value("reader_output", Float, 3));
        return Model(graph);
    }

    /// <summary>An owner layer followed by a reader layer that consumes the owner's present caches.</summary>
    public static ModelProto OwnerThenReader(int elemType, Attrs owner, Attrs reader)
    {
        var graph = new GraphProto { Name = "owner_reader" };
        graph.Node.Add(Node(OpSpec.WindowedAttention, OpSpec.Domain, OwnerInputs[..6], OwnerOutputs, owner));
        graph.Node.Add(Node(OpSpec.SharedKvAttention, OpSpec.Domain,
            ["reader_query", "present_key", "present_value", "past_lengths"], ["reader_output"], reader));
        AddOwnerIo(graph, elemType, withNewLengths: false);
        graph.Input.Add(Value("reader_query", elemType, 3));
        foreach (var o in OwnerOutputs) graph.Output.Add(Value(o, elemType, o == "output" ? 3 : 4));
        graph.Output.Add(Value("reader_output", elemType, 3));
        return Model(graph);
    }

    /// <summary>ORT's own <c>com.microsoft.GroupQueryAttention</c> (no rotary), optional past.</summary>
    public static ModelProto Gqa(int numHeads, int kvNumHeads, int localWindow, bool withPast, bool slidingWindowCache = false)
    {
        var node = new NodeProto { OpType = "GroupQueryAttention", Domain = "com.microsoft", Name = "gqa" };
        node.Input.AddRange(["query", "key", "value", withPast ? "past_key" : "", withPast ? "past_value" : "", "seqlens_k", "total_sequence_length"]);
        node.Output.AddRange(["output", "present_key", "present_value"]);
        node.Attribute.Add(IntAttr(OpSpec.AttrNumHeads, numHeads));
        node.Attribute.Add(IntAttr(OpSpec.AttrKvNumHeads, kvNumHeads));
        node.Attribute.Add(IntAttr("local_window_size", localWindow));
        if (slidingWindowCache) node.Attribute.Add(IntAttr("sliding_window_cache", 1));
        var graph = new GraphProto { Name = "gqa" };
        graph.Node.Add(node);
        graph.Input.Add(Value("query", Float, 3));
        graph.Input.Add(Value("key", Float, 3));
        graph.Input.Add(Value("value", Float, 3));
        if (withPast)
        {
            graph.Input.Add(Value("past_key", Float, 4));
            graph.Input.Add(Value("past_value", Float, 4));
        }
        graph.Input.Add(Value("seqlens_k", Int32, 1));
        graph.Input.Add(Value("total_sequence_length", Int32, 0));
        graph.Output.Add(Value("output", Float, 3));
        graph.Output.Add(Value("present_key", Float, 4));
        graph.Output.Add(Value("present_value", Float, 4));
        var model = Model(graph);
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        return model;
    }

    /// <summary>A CPU session with the op library registered.</summary>
    public static InferenceSession Session(ModelProto model, IReadOnlyDictionary<string, string>? config = null, int threads = 2)
    {
        using var options = new SessionOptions { IntraOpNumThreads = threads, GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        options.RegisterCustomOpLibrary(NativeLibraryPath.GetRequired());
        foreach (var (k, v) in config ?? new Dictionary<string, string>()) options.AddSessionConfigEntry(k, v);
        return new InferenceSession(model.ToByteArray(), options);
    }

    private static void AddOwnerIo(GraphProto graph, int elemType, bool withNewLengths)
    {
        graph.Input.Add(Value("query", elemType, 3));
        graph.Input.Add(Value("key", elemType, 3));
        graph.Input.Add(Value("value", elemType, 3));
        graph.Input.Add(Value("past_key", elemType, 4));
        graph.Input.Add(Value("past_value", elemType, 4));
        graph.Input.Add(Value("past_lengths", Int32, 1));
        if (withNewLengths) graph.Input.Add(Value("new_lengths", Int32, 1));
    }

    private static NodeProto Node(string op, string domain, IEnumerable<string> inputs, IEnumerable<string> outputs, Attrs a)
    {
        var node = new NodeProto { OpType = op, Domain = domain, Name = op };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        node.Attribute.Add(IntAttr(OpSpec.AttrNumHeads, a.NumHeads));
        node.Attribute.Add(IntAttr(OpSpec.AttrKvNumHeads, a.KvNumHeads));
        node.Attribute.Add(IntAttr(OpSpec.AttrWindow, a.Window));
        node.Attribute.Add(new AttributeProto { Name = "scale", Type = AttributeProto.Types.AttributeType.Float, F = a.Scale });
        node.Attribute.Add(new AttributeProto { Name = "softcap", Type = AttributeProto.Types.AttributeType.Float, F = a.Softcap });
        return node;
    }

    private static AttributeProto IntAttr(string name, long value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    private static ValueInfoProto Value(string name, int elemType, int rank)
    {
        var shape = new TensorShapeProto();
        for (int i = 0; i < rank; i++) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = $"{name}_d{i}" });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = elemType, Shape = shape } },
        };
    }

    private static ModelProto Model(GraphProto graph)
    {
        var model = new ModelProto { IrVersion = 10, ProducerName = "MixAttention.Onnx.Tests", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = OpSpec.Domain, Version = 1 });
        return model;
    }
}
