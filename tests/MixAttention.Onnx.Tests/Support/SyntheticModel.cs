using Google.Protobuf;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Onnx.Proto;
using static MixAttention.Onnx.Graph.GraphBuilder;

namespace MixAttention.Onnx.Tests.Support;

/// <summary>
/// Writes a GenAI-style GQA decoder of any size with all weights in one external-data file, created sparse
/// (SetLength): a 13 GB "7B-shape" model costs no disk and no time to make, and reading any weight would
/// show up as time and memory. Structure per layer (Llama): q/k/v MatMuls → GroupQueryAttention → o MatMul → SiLU-gated MLP.
/// </summary>
public static class SyntheticModel
{
    public static (string Path, long DataBytes) Write(string dir, int layers, int hidden, int heads, int kvHeads, int intermediate, int vocab = 32000)
    {
        int d = hidden / heads;
        const int fp16 = (int)TensorProto.Types.DataType.Float16;
        var model = new ModelProto { IrVersion = 10, ProducerName = "mixattn-tests-synthetic", Graph = new GraphProto { Name = "synthetic" } };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        var g = model.Graph;
        long offset = 0;
        string Weight(string name, params long[] dims)
        {
            var t = new TensorProto { Name = name, DataType = fp16 };
            t.Dims.AddRange(dims);
            long bytes = dims.Aggregate(2L, (a, b) => a * b);
            new ExternalDataRef("weights.bin", offset, bytes).ApplyTo(t);
            offset += (bytes + 63) / 64 * 64;
            g.Initializer.Add(t);
            return name;
        }
        NodeProto Node(string op, string[] inputs, string[] outputs, string domain = "", params AttributeProto[] attrs)
        {
            var n = new NodeProto { OpType = op, Domain = domain, Name = outputs[0] };
            n.Input.AddRange(inputs); n.Output.AddRange(outputs); n.Attribute.AddRange(attrs);
            g.Node.Add(n);
            return n;
        }
        g.Input.Add(TensorInfo("input_ids", (int)TensorProto.Types.DataType.Int64, "batch_size", "sequence_length"));
        g.Input.Add(TensorInfo("attention_mask", (int)TensorProto.Types.DataType.Int64, "batch_size", "total_sequence_length"));
        Node("Cast", new[] { "attention_mask" }, new[] { "mask_i32" }, "", Int("to", 6));
        var axes = new TensorProto { Name = "axes1", DataType = 7 }; axes.Dims.Add(1); axes.Int64Data.Add(1); g.Initializer.Add(axes);
        var one = new TensorProto { Name = "one_i32", DataType = 6 }; one.Int32Data.Add(1); g.Initializer.Add(one);
        Node("ReduceSum", new[] { "mask_i32", "axes1" }, new[] { "mask_sum" }, "", Int("keepdims", 0));
        Node("Sub", new[] { "mask_sum", "one_i32" }, new[] { "seqlens_k" });
        Node("Shape", new[] { "attention_mask" }, new[] { "total_1d" }, "", Int("start", 1), Int("end", 2));
        Node("Cast", new[] { "total_1d" }, new[] { "total_i32_1d" }, "", Int("to", 6));
        var zero = new TensorProto { Name = "axes0", DataType = 7 }; zero.Dims.Add(1); zero.Int64Data.Add(0); g.Initializer.Add(zero);
        Node("Squeeze", new[] { "total_i32_1d", "axes0" }, new[] { "total_sequence_length" });
        Node("Gather", new[] { Weight("embed", vocab, hidden), "input_ids" }, new[] { "h0" });
        string h = "h0";
        for (int l = 0; l < layers; l++)
        {
            string P(string s) => $"l{l}.{s}";
            Node("MatMul", new[] { h, Weight(P("q.w"), hidden, heads * d) }, new[] { P("q") });
            Node("MatMul", new[] { h, Weight(P("k.w"), hidden, kvHeads * d) }, new[] { P("k") });
            Node("MatMul", new[] { h, Weight(P("v.w"), hidden, kvHeads * d) }, new[] { P("v") });
            g.Input.Add(TensorInfo($"past_key_values.{l}.key", fp16, "batch_size", (long)kvHeads, "past_sequence_length", (long)d));
            g.Input.Add(TensorInfo($"past_key_values.{l}.value", fp16, "batch_size", (long)kvHeads, "past_sequence_length", (long)d));
            g.Output.Add(TensorInfo($"present.{l}.key", fp16, "batch_size", (long)kvHeads, "total_sequence_length", (long)d));
            g.Output.Add(TensorInfo($"present.{l}.value", fp16, "batch_size", (long)kvHeads, "total_sequence_length", (long)d));
            Node("GroupQueryAttention", new[] { P("q"), P("k"), P("v"), $"past_key_values.{l}.key", $"past_key_values.{l}.value", "seqlens_k", "total_sequence_length" },
                new[] { P("attn"), $"present.{l}.key", $"present.{l}.value" }, "com.microsoft", Int("num_heads", heads), Int("kv_num_heads", kvHeads));
            Node("MatMul", new[] { P("attn"), Weight(P("o.w"), heads * d, hidden) }, new[] { P("o") });
            Node("Add", new[] { h, P("o") }, new[] { P("r1") });
            Node("MatMul", new[] { P("r1"), Weight(P("up.w"), hidden, intermediate) }, new[] { P("up") });
            Node("MatMul", new[] { P("r1"), Weight(P("gate.w"), hidden, intermediate) }, new[] { P("gate") });
            Node("Sigmoid", new[] { P("gate") }, new[] { P("gate_sig") });
            Node("Mul", new[] { P("gate"), P("gate_sig") }, new[] { P("silu") });
            Node("Mul", new[] { P("silu"), P("up") }, new[] { P("act") });
            Node("MatMul", new[] { P("act"), Weight(P("down.w"), intermediate, hidden) }, new[] { P("down") });
            Node("Add", new[] { P("r1"), P("down") }, new[] { P("h") });
            h = P("h");
        }
        Node("MatMul", new[] { h, Weight("lm_head", hidden, vocab) }, new[] { "logits" });
        g.Output.Insert(0, TensorInfo("logits", fp16, "batch_size", "sequence_length", (long)vocab));
        Directory.CreateDirectory(dir);
        using (var data = new FileStream(Path.Combine(dir, "weights.bin"), FileMode.Create, FileAccess.Write))
            data.SetLength(offset); // sparse: no bytes written
        var path = Path.Combine(dir, "model.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        return (path, offset);
    }
}
