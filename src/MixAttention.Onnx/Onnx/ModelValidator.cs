using MixAttention.Onnx.Onnx.Proto;

namespace MixAttention.Onnx.Onnx;

/// <summary>
/// Structural checks a hostile or corrupted model must fail before anything trusts its numbers: tensor dims
/// (negative, overflowing), inline data that does not match its shape, declared shapes with negative sizes,
/// nodes without an op type. Each error names the tensor or node and says what was expected.
/// </summary>
internal static class ModelValidator
{
    /// <summary>Largest element count we accept for one tensor (2^40: 8 TiB of fp64, far beyond any real model).</summary>
    public const long MaxElements = 1L << 40;

    /// <summary>Throws <see cref="OnnxFormatException"/> on the first problem.</summary>
    public static void Validate(ModelProto model)
    {
        var graph = model.Graph ?? throw new OnnxFormatException("the model has no graph.");
        ValidateGraph(graph, "graph");
        foreach (var f in model.Functions)
            foreach (var n in f.Node)
                ValidateNode(n, $"function '{f.Name}'");
    }

    private static void ValidateGraph(GraphProto graph, string where)
    {
        foreach (var t in graph.Initializer)
            ValidateTensor(t, $"{where} initializer");
        foreach (var v in graph.Input.Concat(graph.Output).Concat(graph.ValueInfo))
        {
            if (v.Type?.TensorType?.Shape is { } shape)
                for (int i = 0; i < shape.Dim.Count; i++)
                    if (shape.Dim[i].ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue && shape.Dim[i].DimValue < 0)
                        throw new OnnxFormatException($"{where} value '{v.Name}': dimension {i} is {shape.Dim[i].DimValue}; sizes must be >= 0.");
        }
        foreach (var n in graph.Node)
            ValidateNode(n, where);
    }

    private static void ValidateNode(NodeProto n, string where)
    {
        if (string.IsNullOrEmpty(n.OpType))
            throw new OnnxFormatException($"{where}: node '{n.Name}' (outputs {string.Join(", ", n.Output)}) has no op type.");
        foreach (var a in n.Attribute)
        {
            if (a.T is not null) ValidateTensor(a.T, $"node '{n.Name}' attribute '{a.Name}'");
            foreach (var t in a.Tensors) ValidateTensor(t, $"node '{n.Name}' attribute '{a.Name}'");
            if (a.G is not null) ValidateGraph(a.G, $"node '{n.Name}' subgraph '{a.Name}'");
            foreach (var g in a.Graphs) ValidateGraph(g, $"node '{n.Name}' subgraph '{a.Name}'");
        }
    }

    private static void ValidateTensor(TensorProto t, string where)
    {
        long count = 1;
        for (int i = 0; i < t.Dims.Count; i++)
        {
            var d = t.Dims[i];
            if (d < 0)
                throw new OnnxFormatException($"{where} '{t.Name}': dimension {i} is {d}; sizes must be >= 0.");
            if (d > 0 && count > MaxElements / d)
                throw new OnnxFormatException($"{where} '{t.Name}': shape [{string.Join(",", t.Dims)}] has more than 2^40 elements; the model is corrupt.");
            count *= d;
        }
        if (ExternalDataRef.Of(t) is not null) return;
        var size = OnnxModel.ElementSize(t.DataType);
        if (t.RawData.Length > 0 && size is { } s && t.RawData.Length != count * s)
            throw new OnnxFormatException($"{where} '{t.Name}': shape [{string.Join(",", t.Dims)}] of {(TensorProto.Types.DataType)t.DataType} needs {count * s} bytes but the tensor holds {t.RawData.Length}.");
        int typed = t.FloatData.Count + t.Int32Data.Count + t.Int64Data.Count + t.DoubleData.Count + t.Uint64Data.Count + t.StringData.Count;
        if (t.RawData.Length == 0 && typed > 0 && typed != count && !(t.DataType is (int)TensorProto.Types.DataType.Complex64 or (int)TensorProto.Types.DataType.Complex128))
            throw new OnnxFormatException($"{where} '{t.Name}': shape [{string.Join(",", t.Dims)}] has {count} elements but the tensor holds {typed} values.");
    }
}
