using Google.Protobuf;
using MixAttention.Onnx.Onnx.Proto;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Tuning;

/// <summary>
/// A zoo export with some of its weights edited, written with its config.json into a fresh folder: models whose best
/// layout is known by construction.
/// </summary>
internal sealed class EditedModel
{
    private readonly ModelProto _proto;
    private readonly string _zooName;

    public EditedModel(string zooName)
    {
        _zooName = zooName;
        _proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(ZooFixtures.Model(zooName)));
    }

    private static readonly string[] MatMulWeights =
        { "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight" };

    /// <summary>
    /// The float initializer of one weight of layer <paramref name="layer"/>, e.g. "self_attn.k_proj.weight": found by its
    /// torch name, or, for the projection matrices a dynamo export folds into unnamed transposed tensors, by position:
    /// the constant right-hand sides of MatMul nodes in graph order, seven per Llama-style layer (q, k, v, o, gate, up,
    /// down), checked by shape and by the down projection reading a Mul (the gated activation).
    /// </summary>
    public TensorProto Weight(int layer, string suffix)
    {
        string torch = $"layers.{layer}.{suffix}";
        var named = _proto.Graph.Initializer.FirstOrDefault(t => t.Name.EndsWith(torch, StringComparison.Ordinal));
        if (named is not null) return named;
        int index = Array.IndexOf(MatMulWeights, suffix);
        Assert.IsGreaterThanOrEqualTo(0, index, $"{_zooName}: no initializer named like {torch}");
        var inits = _proto.Graph.Initializer.ToDictionary(t => t.Name);
        var producers = _proto.Graph.Node.SelectMany(n => n.Output.Select(o => (o, n))).ToDictionary(p => p.o, p => p.n);
        var matmuls = _proto.Graph.Node.Where(n => n.OpType == "MatMul" && inits.ContainsKey(n.Input[1]) && inits[n.Input[1]].Dims.Count == 2).ToList();
        var node = matmuls[7 * layer + index];
        var down = matmuls[7 * layer + 6];
        Assert.AreEqual("Mul", producers[down.Input[0]].OpType, $"{_zooName}: layer {layer}'s 7th projection does not read the gated activation");
        var t = inits[node.Input[1]];
        Assert.AreEqual((int)TensorProto.Types.DataType.Float, t.DataType, torch);
        return t;
    }

    public float[] Read(TensorProto t) =>
        t.RawData.Length > 0 ? System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(t.RawData.Span).ToArray() : t.FloatData.ToArray();

    public void Write(TensorProto t, float[] values)
    {
        t.FloatData.Clear();
        t.RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
    }

    public void Scale(int layer, string suffix, float factor)
    {
        var t = Weight(layer, suffix);
        Write(t, Read(t).Select(v => v * factor).ToArray());
    }

    public void Copy(int fromLayer, int toLayer, string suffix) => Write(Weight(toLayer, suffix), Read(Weight(fromLayer, suffix)));

    /// <summary>Writes model.onnx and the export's config.json (detection reads windows from it) into a new folder.</summary>
    public string Save()
    {
        var dir = TestPaths.TempDir();
        File.WriteAllBytes(Path.Combine(dir, "model.onnx"), _proto.ToByteArray());
        File.Copy(Path.Combine(ZooFixtures.Dir(_zooName), "config.json"), Path.Combine(dir, "config.json"));
        return Path.Combine(dir, "model.onnx");
    }
}
