using System.Buffers.Binary;
using MixAttention.Onnx.Onnx.Proto;

namespace MixAttention.Onnx.Graph;

/// <summary>
/// Evaluates the few kinds of constant arithmetic detection needs (a softmax scale written as
/// <c>1/sqrt(Shape(k)[-1])</c>, a reshape target, a Constant node): initializers and Constant nodes
/// through Identity/Cast/Sqrt/Div/Mul/Pow/Gather/Shape/Unsqueeze/Concat. Anything else is "unknown".
/// Never reads external data and never evaluates tensors above <see cref="MaxElements"/>.
/// </summary>
internal sealed class ConstantFolder
{
    /// <summary>Larger constants are not folded (they are weights, not shape arithmetic).</summary>
    public const int MaxElements = 4096;
    private readonly ModelGraph _graph;
    private readonly Dictionary<string, ConstTensor?> _cache = new(StringComparer.Ordinal);

    /// <summary>Folds against <paramref name="graph"/>.</summary>
    public ConstantFolder(ModelGraph graph) => _graph = graph;

    /// <summary>The constant value of <paramref name="value"/>, or null when it is not a small constant we can evaluate.</summary>
    public ConstTensor? TryEvaluate(string value, int depth = 0)
    {
        if (value.Length == 0 || depth > 64) return null;
        if (_cache.TryGetValue(value, out var hit)) return hit;
        var result = Evaluate(value, depth);
        _cache[value] = result;
        return result;
    }

    /// <summary>The scalar value of <paramref name="value"/>, if it is a one-element constant.</summary>
    public double? TryScalar(string value) => TryEvaluate(value)?.Scalar;

    private ConstTensor? Evaluate(string value, int depth)
    {
        if (_graph.Initializer(value) is { } init)
            return ReadTensor(init);
        var node = _graph.Producer(value);
        if (node is null) return null;
        ConstTensor? In(int i) => i < node.Input.Count ? TryEvaluate(node.Input[i], depth + 1) : null;
        switch (node.OpType)
        {
            case "Constant":
                foreach (var a in node.Attribute)
                    switch (a.Name)
                    {
                        case "value": return a.T is null ? null : ReadTensor(a.T);
                        case "value_float": return new ConstTensor(Array.Empty<long>(), new double[] { a.F });
                        case "value_int": return new ConstTensor(Array.Empty<long>(), new double[] { a.I });
                        case "value_floats": return new ConstTensor(new long[] { a.Floats.Count }, a.Floats.Select(f => (double)f).ToArray());
                        case "value_ints": return new ConstTensor(new long[] { a.Ints.Count }, a.Ints.Select(f => (double)f).ToArray());
                    }
                return null;
            case "Identity":
                return In(0);
            case "Cast":
                {
                    var x = In(0);
                    if (x is null) return null;
                    var to = node.Attribute.FirstOrDefault(a => a.Name == "to")?.I ?? 0;
                    bool integral = to is (long)TensorProto.Types.DataType.Int64 or (long)TensorProto.Types.DataType.Int32;
                    return integral ? x with { Data = x.Data.Select(Math.Truncate).ToArray() } : x;
                }
            case "Sqrt": return Unary(In(0), Math.Sqrt);
            case "Reciprocal": return Unary(In(0), v => 1.0 / v);
            case "Neg": return Unary(In(0), v => -v);
            case "Div": return Binary(In(0), In(1), (a, b) => a / b);
            case "Mul": return Binary(In(0), In(1), (a, b) => a * b);
            case "Add": return Binary(In(0), In(1), (a, b) => a + b);
            case "Sub": return Binary(In(0), In(1), (a, b) => a - b);
            case "Pow": return Binary(In(0), In(1), Math.Pow);
            case "Shape":
                {
                    var shape = _graph.DeclaredShape(node.Input[0]);
                    if (shape is null) return null;
                    long start = node.Attribute.FirstOrDefault(a => a.Name == "start")?.I ?? 0;
                    long end = node.Attribute.FirstOrDefault(a => a.Name == "end")?.I ?? shape.Length;
                    if (start < 0) start += shape.Length;
                    if (end < 0) end += shape.Length;
                    start = Math.Clamp(start, 0, shape.Length);
                    end = Math.Clamp(end, start, shape.Length);
                    var dims = shape[(int)start..(int)end];
                    if (dims.Any(d => d < 0)) return null;
                    return new ConstTensor(new long[] { dims.Length }, dims.Select(d => (double)d).ToArray());
                }
            case "Gather":
                {
                    var data = In(0);
                    var idx = In(1);
                    long axis = node.Attribute.FirstOrDefault(a => a.Name == "axis")?.I ?? 0;
                    if (data is null || idx is null || data.Dims.Length != 1 || axis != 0) return null;
                    var n = data.Data.Length;
                    var picked = idx.Data.Select(i => (int)(i < 0 ? i + n : i)).ToArray();
                    if (picked.Any(i => i < 0 || i >= n)) return null;
                    return new ConstTensor(idx.Dims, picked.Select(i => data.Data[i]).ToArray());
                }
            case "Unsqueeze":
            case "Squeeze":
            case "Reshape":
            case "Flatten":
                {
                    var x = In(0);
                    if (x is null) return null;
                    // Only element order matters for the small constants we fold; keep a 1-D view.
                    return new ConstTensor(x.Data.Length == 1 && node.OpType == "Squeeze" ? Array.Empty<long>() : new long[] { x.Data.Length }, x.Data);
                }
            case "Concat":
                {
                    var parts = node.Input.Select((_, i) => In(i)).ToList();
                    if (parts.Any(p => p is null)) return null;
                    var data = parts.SelectMany(p => p!.Data).ToArray();
                    return new ConstTensor(new long[] { data.Length }, data);
                }
            default:
                return null;
        }
    }

    private static ConstTensor? Unary(ConstTensor? x, Func<double, double> f) =>
        x is null ? null : x with { Data = x.Data.Select(f).ToArray() };

    private static ConstTensor? Binary(ConstTensor? a, ConstTensor? b, Func<double, double, double> f)
    {
        if (a is null || b is null) return null;
        if (a.Data.Length == b.Data.Length)
            return new ConstTensor(a.Dims.Length >= b.Dims.Length ? a.Dims : b.Dims, a.Data.Zip(b.Data, f).ToArray());
        if (b.Data.Length == 1) return a with { Data = a.Data.Select(x => f(x, b.Data[0])).ToArray() };
        if (a.Data.Length == 1) return b with { Data = b.Data.Select(x => f(a.Data[0], x)).ToArray() };
        return null;
    }

    /// <summary>Reads a small inline tensor's elements as doubles; null for external, large or unsupported tensors.</summary>
    public static ConstTensor? ReadTensor(TensorProto t)
    {
        long count = t.Dims.Aggregate(1L, (a, d) => a * d);
        if (count > MaxElements || count < 0) return null;
        if (t.HasDataLocation && t.DataLocation == TensorProto.Types.DataLocation.External) return null;
        var dims = t.Dims.ToArray();
        var type = (TensorProto.Types.DataType)t.DataType;
        double[]? data = null;
        if (t.RawData.Length > 0)
        {
            var raw = t.RawData.Span;
            data = type switch
            {
                TensorProto.Types.DataType.Float => Read(raw, 4, count, s => BinaryPrimitives.ReadSingleLittleEndian(s)),
                TensorProto.Types.DataType.Double => Read(raw, 8, count, s => BinaryPrimitives.ReadDoubleLittleEndian(s)),
                TensorProto.Types.DataType.Int64 => Read(raw, 8, count, s => BinaryPrimitives.ReadInt64LittleEndian(s)),
                TensorProto.Types.DataType.Int32 => Read(raw, 4, count, s => BinaryPrimitives.ReadInt32LittleEndian(s)),
                TensorProto.Types.DataType.Float16 => Read(raw, 2, count, s => (double)BinaryPrimitives.ReadHalfLittleEndian(s)),
                TensorProto.Types.DataType.Bfloat16 => Read(raw, 2, count, s => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(s) << 16)),
                TensorProto.Types.DataType.Int8 => Read(raw, 1, count, s => (sbyte)s[0]),
                TensorProto.Types.DataType.Uint8 or TensorProto.Types.DataType.Bool => Read(raw, 1, count, s => s[0]),
                _ => null,
            };
        }
        else if (t.FloatData.Count > 0) data = t.FloatData.Select(f => (double)f).ToArray();
        else if (t.DoubleData.Count > 0) data = t.DoubleData.ToArray();
        else if (t.Int64Data.Count > 0) data = t.Int64Data.Select(f => (double)f).ToArray();
        else if (t.Int32Data.Count > 0)
            data = type == TensorProto.Types.DataType.Float16
                ? t.Int32Data.Select(v => (double)BitConverter.UInt16BitsToHalf((ushort)v)).ToArray()
                : t.Int32Data.Select(f => (double)f).ToArray();
        else if (count == 0) data = Array.Empty<double>();
        if (data is null || data.Length != count) return null;
        return new ConstTensor(dims, data);
    }

    private delegate double Reader(ReadOnlySpan<byte> s);

    private static double[]? Read(ReadOnlySpan<byte> raw, int size, long count, Reader read)
    {
        if (raw.Length != size * count) return null;
        var result = new double[count];
        for (int i = 0; i < count; i++) result[i] = read(raw.Slice(i * size, size));
        return result;
    }
}
