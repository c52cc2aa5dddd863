using Google.Protobuf;
using MixAttention.Onnx.Onnx.Proto;

namespace MixAttention.Onnx.Graph;

/// <summary>
/// Appends new nodes and small constants to a <see cref="ModelGraph"/> with unique, readable names
/// (<c>mixattn/L3/…</c>). Rewrites use it so every new value is linked and named consistently.
/// </summary>
internal sealed class GraphBuilder
{
    private readonly ModelGraph _graph;
    private int _counter;

    /// <summary>Builds into <paramref name="graph"/>; names start with <paramref name="prefix"/>.</summary>
    public GraphBuilder(ModelGraph graph, string prefix)
    {
        _graph = graph;
        Prefix = prefix;
    }

    /// <summary>Name prefix of new nodes and values.</summary>
    public string Prefix { get; }

    /// <summary>The graph being built into.</summary>
    public ModelGraph Graph => _graph;

    /// <summary>A fresh value name.</summary>
    public string Name(string stem) => _graph.UniqueName($"{Prefix}/{stem}_{_counter++}");

    /// <summary>Adds a node with one output and returns the output's name.</summary>
    public string Op(string opType, string stem, IEnumerable<string> inputs, string domain = "", params AttributeProto[] attributes) =>
        Ops(opType, stem, inputs, 1, domain, attributes)[0];

    /// <summary>Adds a node with <paramref name="outputs"/> outputs and returns their names.</summary>
    public string[] Ops(string opType, string stem, IEnumerable<string> inputs, int outputs, string domain = "", params AttributeProto[] attributes)
    {
        var name = Name(stem);
        var node = new NodeProto { Name = name, OpType = opType, Domain = domain };
        node.Input.AddRange(inputs);
        for (int i = 0; i < outputs; i++) node.Output.Add(outputs == 1 ? name : $"{name}:{i}");
        node.Attribute.AddRange(attributes);
        _graph.AddNode(node);
        return node.Output.ToArray();
    }

    /// <summary>An int64 constant (1-D, or a scalar when <paramref name="scalar"/>).</summary>
    public string Int64s(string stem, long[] values, bool scalar = false)
    {
        var t = new TensorProto { Name = Name(stem), DataType = (int)TensorProto.Types.DataType.Int64 };
        if (!scalar) t.Dims.Add(values.Length);
        t.Int64Data.AddRange(values);
        _graph.AddInitializer(t);
        return t.Name;
    }

    /// <summary>A scalar constant of the given element type (fp32, fp16, bf16).</summary>
    public string Scalar(string stem, float value, int elementType)
    {
        var t = new TensorProto { Name = Name(stem), DataType = elementType };
        switch ((TensorProto.Types.DataType)elementType)
        {
            case TensorProto.Types.DataType.Float: t.FloatData.Add(value); break;
            case TensorProto.Types.DataType.Float16:
                t.RawData = ByteString.CopyFrom(BitConverter.GetBytes(BitConverter.HalfToUInt16Bits((Half)value)));
                break;
            case TensorProto.Types.DataType.Bfloat16:
                t.RawData = ByteString.CopyFrom(BitConverter.GetBytes((ushort)(BitConverter.SingleToUInt32Bits(value) >> 16)));
                break;
            default: throw new NotSupportedException($"element type {(TensorProto.Types.DataType)elementType} is not supported for attention");
        }
        _graph.AddInitializer(t);
        return t.Name;
    }

    /// <summary>Default-domain opset of the model (decides attribute vs input forms of Squeeze/Unsqueeze/Split).</summary>
    public long Opset => _graph.OpsetVersion("") ?? 13;

    /// <summary>Unsqueeze in the form the model's opset expects.</summary>
    public string Unsqueeze(string stem, string x, params long[] axes) => Opset >= 13
        ? Op("Unsqueeze", stem, new[] { x, Int64s("axes", axes) })
        : Op("Unsqueeze", stem, new[] { x }, "", Ints("axes", axes));

    /// <summary>Squeeze in the form the model's opset expects.</summary>
    public string Squeeze(string stem, string x, params long[] axes) => Opset >= 13
        ? Op("Squeeze", stem, new[] { x, Int64s("axes", axes) })
        : Op("Squeeze", stem, new[] { x }, "", Ints("axes", axes));

    /// <summary>Split along the last axis into parts of the given sizes.</summary>
    public string[] SplitLast(string stem, string x, params long[] sizes) => Opset >= 13
        ? Ops("Split", stem, new[] { x, Int64s("split", sizes) }, sizes.Length, "", Int("axis", -1))
        : Ops("Split", stem, new[] { x }, sizes.Length, "", Int("axis", -1), Ints("split", sizes));

    /// <summary>Dims [start, end) of a value's shape as int64 [end-start] (Shape's start/end need opset 15; older models get Shape + Slice).</summary>
    public string ShapeSlice(string stem, string x, long start, long end) => Opset >= 15
        ? Op("Shape", stem, new[] { x }, "", Int("start", start), Int("end", end))
        : Op("Slice", stem, new[] { Op("Shape", stem + "_full", new[] { x }), Int64s("starts", new[] { start }), Int64s("ends", new[] { end }) });

    /// <summary>A string attribute.</summary>
    public static AttributeProto Str(string name, string value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.String, S = Google.Protobuf.ByteString.CopyFromUtf8(value) };

    /// <summary>An int attribute.</summary>
    public static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };
    /// <summary>A float attribute.</summary>
    public static AttributeProto Float(string name, float value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };
    /// <summary>An ints attribute.</summary>
    public static AttributeProto Ints(string name, params long[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        return a;
    }

    /// <summary>A tensor value info with element type and dims (a string is a symbolic dim, a long a fixed one).</summary>
    public static ValueInfoProto TensorInfo(string name, int elementType, params object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
            shape.Dim.Add(d switch
            {
                string s => new TensorShapeProto.Types.Dimension { DimParam = s },
                long l => new TensorShapeProto.Types.Dimension { DimValue = l },
                int i => new TensorShapeProto.Types.Dimension { DimValue = i },
                _ => throw new ArgumentException($"bad dim {d}"),
            });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = elementType, Shape = shape } } };
    }
}
