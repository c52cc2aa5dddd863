using MixAttention.Onnx.Onnx.Proto;

namespace MixAttention.Onnx.Onnx;

/// <summary>
/// Where an initializer's bytes live when the model stores them outside the protobuf
/// (TensorProto.data_location = EXTERNAL, keys <c>location</c>, <c>offset</c>, <c>length</c>).
/// </summary>
/// <param name="Location">Path relative to the model's folder, as written in the model.</param>
/// <param name="Offset">Byte offset in that file.</param>
/// <param name="Length">Byte count; null when the model leaves it out (then: to the end of the file).</param>
internal sealed record ExternalDataRef(string Location, long Offset, long? Length)
{
    /// <summary>Reads the external-data reference of a tensor, or null when its data is inline.</summary>
    public static ExternalDataRef? Of(TensorProto tensor)
    {
        if (!tensor.HasDataLocation || tensor.DataLocation != TensorProto.Types.DataLocation.External)
            return null;
        string? location = null;
        long offset = 0;
        long? length = null;
        foreach (var entry in tensor.ExternalData)
        {
            switch (entry.Key)
            {
                case "location": location = entry.Value; break;
                case "offset":
                    if (!long.TryParse(entry.Value, out offset) || offset < 0)
                        throw new OnnxFormatException($"Tensor '{tensor.Name}': external data offset '{entry.Value}' is not a non-negative integer.");
                    break;
                case "length":
                    if (!long.TryParse(entry.Value, out var len) || len < 0)
                        throw new OnnxFormatException($"Tensor '{tensor.Name}': external data length '{entry.Value}' is not a non-negative integer.");
                    length = len;
                    break;
            }
        }
        if (string.IsNullOrEmpty(location))
            throw new OnnxFormatException($"Tensor '{tensor.Name}' is marked as external data but has no 'location' entry.");
        return new ExternalDataRef(location, offset, length);
    }

    /// <summary>Writes this reference into a tensor, replacing its previous external-data entries.</summary>
    public void ApplyTo(TensorProto tensor)
    {
        tensor.ClearRawData();
        tensor.ExternalData.Clear();
        tensor.DataLocation = TensorProto.Types.DataLocation.External;
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = Location });
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = Offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        if (Length is { } l)
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = l.ToString(System.Globalization.CultureInfo.InvariantCulture) });
    }

    /// <summary>Every tensor of a model that can carry data: initializers of the main graph, of subgraphs and of attribute tensors.</summary>
    public static IEnumerable<TensorProto> AllTensors(ModelProto model)
    {
        if (model.Graph is not null)
            foreach (var t in AllTensors(model.Graph)) yield return t;
        foreach (var f in model.Functions)
            foreach (var n in f.Node)
                foreach (var t in AttributeTensors(n)) yield return t;
    }

    private static IEnumerable<TensorProto> AllTensors(GraphProto graph)
    {
        foreach (var t in graph.Initializer) yield return t;
        foreach (var s in graph.SparseInitializer)
        {
            if (s.Values is not null) yield return s.Values;
            if (s.Indices is not null) yield return s.Indices;
        }
        foreach (var n in graph.Node)
            foreach (var t in AttributeTensors(n)) yield return t;
    }

    private static IEnumerable<TensorProto> AttributeTensors(NodeProto node)
    {
        foreach (var a in node.Attribute)
        {
            if (a.T is not null) yield return a.T;
            foreach (var t in a.Tensors) yield return t;
            if (a.G is not null)
                foreach (var t in AllTensors(a.G)) yield return t;
            foreach (var g in a.Graphs)
                foreach (var t in AllTensors(g)) yield return t;
        }
    }
}
