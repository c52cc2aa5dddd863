using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MixAttention.Onnx.Onnx.Proto;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Tests.NativeOps;

/// <summary>
/// Quantized (int8 / float8e4m3fn) caches through ORT (docs/ops.md, "Quantized caches"): our WindowedAttention against
/// ORT 1.31's CPU <c>com.microsoft.GroupQueryAttention</c> with int8 caches and the same scales (outputs up to fp32
/// rounding, cache bytes exactly), the scale inputs' rules and errors, and empty-name optional inputs.
/// </summary>
[TestClass]
public sealed class QuantizedCacheTests
{
    private const int Int8 = 3, Uint8 = 2, Float8E4M3 = 17, Float = NativeOpModels.Float, Int32 = NativeOpModels.Int32;
    private const int Hq = 4, Hkv = 2, D = 16;

    private sealed record Tensor(string Name, int ElemType, long[] Shape, byte[]? Bytes = null, float[]? Floats = null, int[]? Ints = null);

    private static Tensor Fl(string name, float[] data, params long[] shape) => new(name, Float, shape, Floats: data);
    private static Tensor In(string name, int[] data) => new(name, Int32, [data.Length], Ints: data);
    private static Tensor Q(string name, int elemType, byte[] data, params long[] shape) => new(name, elemType, shape, Bytes: data);

    private static OrtValue Create(Tensor t)
    {
        if (t.Floats is not null) return OrtValue.CreateTensorValueFromMemory(t.Floats, t.Shape);
        if (t.Ints is not null) return OrtValue.CreateTensorValueFromMemory(t.Ints, t.Shape);
        var type = t.ElemType switch { Int8 => TensorElementType.Int8, Uint8 => TensorElementType.UInt8, _ => (TensorElementType)Float8E4M3 };
        var v = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, type, t.Shape);
        t.Bytes!.CopyTo(v.GetTensorMutableRawData());
        return v;
    }

    /// <summary>Runs the session; float outputs as floats, 1-byte outputs as raw bytes.</summary>
    private static (Dictionary<string, float[]> floats, Dictionary<string, byte[]> bytes) Run(InferenceSession session, params Tensor[] inputs)
    {
        var values = inputs.Select(Create).ToList();
        try
        {
            using var runOptions = new RunOptions();
            var names = session.OutputNames;
            using var results = session.Run(runOptions, inputs.Select(i => i.Name).ToList(), values, names);
            var floats = new Dictionary<string, float[]>();
            var bytes = new Dictionary<string, byte[]>();
            for (int i = 0; i < names.Count; i++)
            {
                if (results[i].GetTensorTypeAndShape().ElementDataType == TensorElementType.Float)
                    floats[names[i]] = results[i].GetTensorDataAsSpan<float>().ToArray();
                else
                    bytes[names[i]] = results[i].GetTensorDataAsSpan<byte>().ToArray();
            }
            return (floats, bytes);
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    // ---- Models ----

    private static ValueInfoProto Value(string name, int elemType, int rank)
    {
        var shape = new TensorShapeProto();
        for (int i = 0; i < rank; i++) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = $"{name}_d{i}" });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = elemType, Shape = shape } } };
    }

    private static AttributeProto IntAttr(string name, long v) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = v };
    private static AttributeProto StrAttr(string name, string v) => new() { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(v) };

    private static ModelProto Model(GraphProto graph, bool microsoft = false)
    {
        var model = new ModelProto { IrVersion = 10, ProducerName = "MixAttention.Onnx.Tests", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = OpSpec.Domain, Version = 1 });
        if (microsoft) model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        return model;
    }

    /// <summary>
    /// WindowedAttention (float queries) over <paramref name="cacheType"/> caches. With <paramref name="withNewLengths"/>
    /// the node is [.. new_lengths, "", "", k_scale, v_scale] (empty-name rotary inputs), else [.. past_lengths, "", "", "",
    /// k_scale, v_scale]; <paramref name="withScales"/> = false leaves the scales out.
    /// </summary>
    private static ModelProto Owner(int cacheType, int window, bool withNewLengths, bool withScales = true, bool withK = true)
    {
        var node = new NodeProto { OpType = OpSpec.WindowedAttention, Domain = OpSpec.Domain, Name = "owner" };
        node.Input.AddRange(["query", "key", "value", "past_key", "past_value", "past_lengths", withNewLengths ? "new_lengths" : "", "", ""]);
        if (withScales) node.Input.AddRange([withK ? "k_scale" : "", "v_scale"]);
        node.Output.AddRange(["output", "present_key", "present_value"]);
        node.Attribute.Add(IntAttr(OpSpec.AttrNumHeads, Hq));
        node.Attribute.Add(IntAttr(OpSpec.AttrKvNumHeads, Hkv));
        node.Attribute.Add(IntAttr(OpSpec.AttrWindow, window));
        var g = new GraphProto { Name = "quantized_owner" };
        g.Node.Add(node);
        g.Input.Add(Value("query", Float, 3));
        g.Input.Add(Value("key", Float, 3));
        g.Input.Add(Value("value", Float, 3));
        g.Input.Add(Value("past_key", cacheType, 4));
        g.Input.Add(Value("past_value", cacheType, 4));
        g.Input.Add(Value("past_lengths", Int32, 1));
        if (withNewLengths) g.Input.Add(Value("new_lengths", Int32, 1));
        if (withScales && withK) g.Input.Add(Value("k_scale", Float, 1));
        if (withScales) g.Input.Add(Value("v_scale", Float, 1));
        foreach (var i in g.Input.Where(i => i.Name.EndsWith("_scale", StringComparison.Ordinal))) i.Type.TensorType.Shape = null; // any rank
        // Declared output types: ORT's custom-op type inference gives up on a node with an empty input name.
        g.Output.Add(Value("output", Float, 3));
        g.Output.Add(Value("present_key", cacheType, 4));
        g.Output.Add(Value("present_value", cacheType, 4));
        return Model(g);
    }

    /// <summary>An owner then a reader over its present caches with the owner's scale tensors, all inputs given.</summary>
    private static ModelProto OwnerThenReader(int cacheType, int window, int readerWindow)
    {
        var g = new GraphProto { Name = "quantized_owner_reader" };
        var o = new NodeProto { OpType = OpSpec.WindowedAttention, Domain = OpSpec.Domain, Name = "owner" };
        o.Input.AddRange(["query", "key", "value", "past_key", "past_value", "past_lengths", "new_lengths", "", "", "k_scale", "v_scale"]);
        o.Output.AddRange(["output", "present_key", "present_value"]);
        var r = new NodeProto { OpType = OpSpec.SharedKvAttention, Domain = OpSpec.Domain, Name = "reader" };
        r.Input.AddRange(["reader_query", "present_key", "present_value", "past_lengths", "new_lengths", "", "", "k_scale", "v_scale"]);
        r.Output.Add("reader_output");
        foreach (var (n, w) in new[] { (o, window), (r, readerWindow) })
        {
            n.Attribute.Add(IntAttr(OpSpec.AttrNumHeads, Hq));
            n.Attribute.Add(IntAttr(OpSpec.AttrKvNumHeads, Hkv));
            n.Attribute.Add(IntAttr(OpSpec.AttrWindow, w));
        }
        g.Node.Add(o);
        g.Node.Add(r);
        foreach (var (name, t, rank) in new[] { ("query", Float, 3), ("key", Float, 3), ("value", Float, 3), ("past_key", cacheType, 4),
                     ("past_value", cacheType, 4), ("past_lengths", Int32, 1), ("new_lengths", Int32, 1), ("reader_query", Float, 3) })
            g.Input.Add(Value(name, t, rank));
        g.Input.Add(new ValueInfoProto { Name = "k_scale", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = Float } } });
        g.Input.Add(new ValueInfoProto { Name = "v_scale", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = Float } } });
        g.Output.Add(Value("output", Float, 3));
        g.Output.Add(Value("present_key", cacheType, 4));
        g.Output.Add(Value("present_value", cacheType, 4));
        g.Output.Add(Value("reader_output", Float, 3));
        return Model(g);
    }

    /// <summary>ORT's GroupQueryAttention with int8 caches, PER_TENSOR or PER_CHANNEL scales (inputs 12, 13).</summary>
    private static ModelProto GqaInt8(int localWindow, bool perChannel, bool withPast)
    {
        var node = new NodeProto { OpType = "GroupQueryAttention", Domain = "com.microsoft", Name = "gqa" };
        node.Input.AddRange(["query", "key", "value", withPast ? "past_key" : "", withPast ? "past_value" : "", "seqlens_k",
            "total_sequence_length", "", "", "", "", "", "k_scale", "v_scale"]);
        node.Output.AddRange(["output", "present_key", "present_value"]);
        node.Attribute.Add(IntAttr(OpSpec.AttrNumHeads, Hq));
        node.Attribute.Add(IntAttr(OpSpec.AttrKvNumHeads, Hkv));
        node.Attribute.Add(IntAttr("local_window_size", localWindow));
        node.Attribute.Add(StrAttr("k_quant_type", perChannel ? "PER_CHANNEL" : "PER_TENSOR"));
        node.Attribute.Add(StrAttr("v_quant_type", perChannel ? "PER_CHANNEL" : "PER_TENSOR"));
        node.Attribute.Add(IntAttr("kv_cache_bit_width", 8));
        var g = new GraphProto { Name = "gqa_int8" };
        g.Node.Add(node);
        g.Input.Add(Value("query", Float, 3));
        g.Input.Add(Value("key", Float, 3));
        g.Input.Add(Value("value", Float, 3));
        if (withPast)
        {
            g.Input.Add(Value("past_key", Int8, 4));
            g.Input.Add(Value("past_value", Int8, 4));
        }
        g.Input.Add(Value("seqlens_k", Int32, 1));
        g.Input.Add(Value("total_sequence_length", Int32, 0));
        g.Input.Add(new ValueInfoProto { Name = "k_scale", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = Float } } });
        g.Input.Add(new ValueInfoProto { Name = "v_scale", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = Float } } });
        g.Output.Add(Value("output", Float, 3));
        g.Output.Add(Value("present_key", Int8, 4));
        g.Output.Add(Value("present_value", Int8, 4));
        return Model(g, microsoft: true);
    }

    private static InferenceSession Session(ModelProto model) => NativeOpModels.Session(model);

    // ---- Data ----

    private static float[] Scales(Random rng, bool perChannel, float range) =>
        [.. Enumerable.Range(0, perChannel ? Hkv * D : 1).Select(_ => (float)(2.0 + 2.5 * rng.NextDouble()) / range)];

    private static long[] ScaleShape(bool perChannel) => perChannel ? [1, Hkv, 1, D] : [1];

    private static double MaxDiff(float[] a, float[] b)
    {
        Assert.AreEqual(a.Length, b.Length);
        return a.Zip(b, (x, y) => Math.Abs((double)x - y)).Max();
    }

    /// <summary>Rows 0 .. rows-1 of each (KV head) of a [1, Hkv, c, D] cache, placed into a [1, Hkv, capacity, D] cache.</summary>
    private static byte[] Widen(byte[] cache, int c, int rows, int capacity)
    {
        var w = new byte[Hkv * capacity * D];
        for (int h = 0; h < Hkv; h++) Array.Copy(cache, h * c * D, w, h * capacity * D, rows * D);
        return w;
    }

    // ---- ORT GQA vs WindowedAttention int8 ----

    /// <summary>ORT's int8 rule (MLAS <c>MlasKVQuantize</c>): rint(x * (1/scale)) half to even, clamped to [-128, 127].</summary>
    private static sbyte QuantizeInt8(float x, float scale)
    {
        float y = x * (1f / scale);
        if (float.IsNaN(y) || y >= 127f) return 127;
        return y <= -128f ? (sbyte)-128 : (sbyte)MathF.Round(y, MidpointRounding.ToEven);
    }

    /// <summary>
    /// ORT 1.31's CPU <c>GroupQueryAttention</c> binds its cache type from <c>past_key</c>: without past inputs the
    /// present outputs are typed T, so an int8 cache needs a past input (a zero-length past for a prompt).
    /// </summary>
    [TestMethod]
    public void OrtCpuGroupQueryAttentionNeedsAPastInputForInt8Caches()
    {
        var ex = Assert.ThrowsExactly<OnnxRuntimeException>(() =>
        {
            using var s = Session(GqaInt8(-1, perChannel: false, withPast: false));
        });
        StringAssert.Contains(ex.Message, "Type (tensor(int8)) of output arg (present_key) of node (gqa) does not match expected type (tensor(float))");
    }

    /// <summary>
    /// Prefill of S tokens then decode steps, same inputs and scales: our int8 WindowedAttention against ORT's CPU
    /// GroupQueryAttention with int8 caches (outputs up to fp32 rounding, cache bytes identical), and against GQA in
    /// fp32 over the keys/values quantized and dequantized by the ported arithmetic above. GQA keeps a growing full
    /// cache; ours is global (window 0) or a sliding ring of capacity W + 2 (prefill longer than the ring).
    /// </summary>
    [TestMethod]
    [DataRow(false, 0, DisplayName = "per tensor, global")]
    [DataRow(true, 0, DisplayName = "per channel, global")]
    [DataRow(false, 5, DisplayName = "per tensor, sliding W=5")]
    [DataRow(true, 5, DisplayName = "per channel, sliding W=5")]
    public void Int8MatchesOrtGroupQueryAttention(bool perChannel, int window)
    {
        const int S = 9, Steps = 8, Total = S + Steps;
        var rng = new Random(perChannel ? 3 : 4);
        var ks = Scales(rng, perChannel, 127f);
        var vs = Scales(rng, perChannel, 127f);
        var q = AttentionReference.Random(rng, Total * Hq * D);
        var k = AttentionReference.Random(rng, Total * Hkv * D);
        var v = AttentionReference.Random(rng, Total * Hkv * D);
        float[] Rows(float[] x, int width, int from, int count) => x[(from * width)..((from + count) * width)];
        // Token-major [Total, Hkv*D] -> quantized bytes and dequantized floats.
        sbyte Qk(int i) => QuantizeInt8(k[i], ks[perChannel ? i % (Hkv * D) : 0]);
        sbyte Qv(int i) => QuantizeInt8(v[i], vs[perChannel ? i % (Hkv * D) : 0]);
        var dk = Enumerable.Range(0, k.Length).Select(i => Qk(i) * ks[perChannel ? i % (Hkv * D) : 0]).ToArray();
        var dv = Enumerable.Range(0, v.Length).Select(i => Qv(i) * vs[perChannel ? i % (Hkv * D) : 0]).ToArray();
        float[] Bnsh(float[] x, int tokens) // [tokens, Hkv*D] -> [1, Hkv, tokens, D]
        {
            var r = new float[tokens * Hkv * D];
            for (int t = 0; t < tokens; t++)
                for (int h = 0; h < Hkv; h++) Array.Copy(x, (t * Hkv + h) * D, r, (h * tokens + t) * D, D);
            return r;
        }

        using var gqaQuant = Session(GqaInt8(window > 0 ? window : -1, perChannel, withPast: true));
        using var gqaFloat = Session(NativeOpModels.Gqa(Hq, Hkv, window > 0 ? window : -1, withPast: true));
        using var ours = Session(Owner(Int8, window, withNewLengths: false));
        var scaleInputs = new[] { Fl("k_scale", ks, ScaleShape(perChannel)), Fl("v_scale", vs, ScaleShape(perChannel)) };

        // ORT GQA with int8 caches: prompt over a zero-length past, then decode with past = the previous present.
        var gqaOut = new List<float[]>();
        var gqaFloatOut = new List<float[]>(); // GQA fp32 over the quantize-dequantized keys/values (ported arithmetic)
        byte[] gk = [], gv = [];
        for (int t = 0; t < Total; t = t == 0 ? S : t + 1)
        {
            int n = t == 0 ? S : 1;
            var r = Run(gqaQuant, [Fl("query", Rows(q, Hq * D, t, n), 1, n, Hq * D), Fl("key", Rows(k, Hkv * D, t, n), 1, n, Hkv * D),
                Fl("value", Rows(v, Hkv * D, t, n), 1, n, Hkv * D), Q("past_key", Int8, gk, 1, Hkv, t, D), Q("past_value", Int8, gv, 1, Hkv, t, D),
                In("seqlens_k", [t + n - 1]), new Tensor("total_sequence_length", Int32, [], Ints: [t + n]), .. scaleInputs]);
            gqaOut.Add(r.floats["output"]);
            gk = r.bytes["present_key"];
            gv = r.bytes["present_value"];
            Assert.AreEqual(Hkv * (t + n) * D, gk.Length, "GQA present holds every position");
            gqaFloatOut.Add(OpRunner.Run(gqaFloat, OpRunner.F("query", Rows(q, Hq * D, t, n), 1, n, Hq * D),
                OpRunner.F("key", Rows(dk, Hkv * D, t, n), 1, n, Hkv * D), OpRunner.F("value", Rows(dv, Hkv * D, t, n), 1, n, Hkv * D),
                OpRunner.F("past_key", Bnsh(Rows(dk, Hkv * D, 0, t), t), 1, Hkv, t, D), OpRunner.F("past_value", Bnsh(Rows(dv, Hkv * D, 0, t), t), 1, Hkv, t, D),
                OpRunner.I("seqlens_k", [t + n - 1]), new OpRunner.Input("total_sequence_length", new[] { t + n }, []))["output"]);
        }

        int capacity = window > 0 ? window + 2 : Total;
        byte[] ok = new byte[Hkv * capacity * D], ov = new byte[Hkv * capacity * D];
        var oursOut = new List<float[]>();
        for (int t = 0; t < Total; t = t == 0 ? S : t + 1)
        {
            int n = t == 0 ? S : 1;
            var r = Run(ours, [Fl("query", Rows(q, Hq * D, t, n), 1, n, Hq * D), Fl("key", Rows(k, Hkv * D, t, n), 1, n, Hkv * D),
                Fl("value", Rows(v, Hkv * D, t, n), 1, n, Hkv * D), Q("past_key", Int8, ok, 1, Hkv, capacity, D), Q("past_value", Int8, ov, 1, Hkv, capacity, D),
                In("past_lengths", [t]), .. scaleInputs]);
            oursOut.Add(r.floats["output"]);
            ok = r.bytes["present_key"];
            ov = r.bytes["present_value"];
        }

        Assert.AreEqual(gqaOut.Count, oursOut.Count);
        for (int i = 0; i < gqaOut.Count; i++)
        {
            double diff = MaxDiff(gqaOut[i], oursOut[i]);
            Assert.IsTrue(diff < 2e-5, $"step {i}: max |GQA int8 - ours| = {diff}");
            double diffFloat = MaxDiff(gqaFloatOut[i], oursOut[i]);
            Assert.IsTrue(diffFloat < 2e-5, $"step {i}: max |GQA fp32 on dequantized K/V - ours| = {diffFloat}");
        }
        // Cache bytes: ORT's present, ours and the ported arithmetic agree on every position we still hold.
        for (int h = 0; h < Hkv; h++)
            for (int pos = 0; pos < Total; pos++)
                for (int d = 0; d < D; d++)
                {
                    int src = (pos * Hkv + h) * D + d, full = (h * Total + pos) * D + d;
                    Assert.AreEqual(Qk(src), (sbyte)gk[full], $"GQA key byte head {h} position {pos} channel {d}");
                    Assert.AreEqual(Qv(src), (sbyte)gv[full], $"GQA value byte head {h} position {pos} channel {d}");
                    if (pos < Total - capacity) continue;
                    int slot = (h * capacity + pos % capacity) * D + d;
                    Assert.AreEqual(gk[full], ok[slot], $"key byte head {h} position {pos} channel {d}");
                    Assert.AreEqual(gv[full], ov[slot], $"value byte head {h} position {pos} channel {d}");
                }
        // The quantization is visible: int8 attention differs from unquantized attention, but stays close.
        var exact = OpRunner.Run(gqaFloat, OpRunner.F("query", Rows(q, Hq * D, 0, S), 1, S, Hq * D), OpRunner.F("key", Rows(k, Hkv * D, 0, S), 1, S, Hkv * D),
            OpRunner.F("value", Rows(v, Hkv * D, 0, S), 1, S, Hkv * D), OpRunner.F("past_key", [], 1, Hkv, 0, D), OpRunner.F("past_value", [], 1, Hkv, 0, D),
            OpRunner.I("seqlens_k", [S - 1]), new OpRunner.Input("total_sequence_length", new[] { S }, []))["output"];
        Assert.IsTrue(MaxDiff(exact, oursOut[0]) > 1e-4, "int8 caches must not be bit-equal to float attention");
        Assert.IsTrue(MaxDiff(exact, oursOut[0]) < 0.1, $"int8 caches stay close to float attention: {MaxDiff(exact, oursOut[0])}");
    }

    /// <summary>
    /// ORT 1.31's C# API cannot create a session with a float8e4m3fn graph input (its TensorElementType has no fp8
    /// member: "Unregistered TensorElementType value of: DataTypeMax"), so fp8 caches are tested natively
    /// (native/tests/quantized_cache_test.cc) and, through ORT, with the caches declared uint8 (the same bytes; see
    /// <see cref="OwnerAndReaderMatchTheirDequantizedCache"/>).
    /// </summary>
    [TestMethod]
    public void CSharpSessionRejectsFloat8Inputs()
    {
        var ex = Assert.ThrowsExactly<OnnxRuntimeException>(() =>
        {
            using var s = Session(Owner(Float8E4M3, 0, withNewLengths: true));
        });
        StringAssert.Contains(ex.Message, "Unregistered TensorElementType");
    }

    /// <summary>fp8 value of an E4M3FN code (docs/ops.md), for the float reference.</summary>
    private static float Fp8(byte c)
    {
        int e = (c >> 3) & 15, m = c & 7;
        float a = e == 0 ? m / 512f : MathF.Pow(2, e - 7) * (1 + m / 8f);
        return (c & 0x80) != 0 ? -a : a;
    }

    /// <summary>
    /// Owner + reader (with the owner's scale tensors, per channel K / per tensor V) over a ring: prefill longer than
    /// the window, then decode past the wrap: against double-precision attention over the dequantized cache bytes the op wrote.
    /// </summary>
    [TestMethod]
    [DataRow(Int8, DisplayName = "int8")]
    [DataRow(Uint8, DisplayName = "fp8 E4M3FN bytes typed uint8")]
    public void OwnerAndReaderMatchTheirDequantizedCache(int cacheType)
    {
        const int W = 4, C = W + 1, S = C, Rw = 3; // prefill longer than the window; readers need P + N - lo <= C
        var rng = new Random(8);
        float range = cacheType == Int8 ? 127f : 448f;
        var ks = Scales(rng, true, range);
        var vs = Scales(rng, false, range);
        using var session = Session(OwnerThenReader(cacheType, W, Rw));
        byte[] ck = new byte[Hkv * C * D], cv = new byte[Hkv * C * D];
        float Deq(byte b, float s) => (cacheType == Int8 ? (sbyte)b : Fp8(b)) * s;
        int past = 0;
        var history = new AttentionReference(1, Hkv, D); // dequantized rows by position
        foreach (int n in new[] { S, 1, 1, 1, 1, 1, 1 })
        {
            var q = AttentionReference.Random(rng, n * Hq * D);
            var rq = AttentionReference.Random(rng, n * Hq * D);
            var k = AttentionReference.Random(rng, n * Hkv * D);
            var v = AttentionReference.Random(rng, n * Hkv * D);
            var r = Run(session, Fl("query", q, 1, n, Hq * D), Fl("key", k, 1, n, Hkv * D), Fl("value", v, 1, n, Hkv * D),
                Q("past_key", cacheType, ck, 1, Hkv, C, D), Q("past_value", cacheType, cv, 1, Hkv, C, D), In("past_lengths", [past]),
                In("new_lengths", [n]), Fl("reader_query", rq, 1, n, Hq * D), Fl("k_scale", ks, 1, Hkv, 1, D), Fl("v_scale", vs, 1));
            ck = r.bytes["present_key"];
            cv = r.bytes["present_value"];
            // The chunk's rows as the op stored them, dequantized with the documented arithmetic.
            var dk = new float[n * Hkv * D];
            var dv = new float[n * Hkv * D];
            for (int s = 0; s < n; s++)
                for (int h = 0; h < Hkv; h++)
                    for (int d = 0; d < D; d++)
                    {
                        int slot = ((h * C) + (past + s) % C) * D + d;
                        dk[(s * Hkv + h) * D + d] = Deq(ck[slot], ks[h * D + d]);
                        dv[(s * Hkv + h) * D + d] = Deq(cv[slot], vs[0]);
                    }
            history.Append(0, dk, dv, n, n);
            // Positions before past + n - C were overwritten within this step (prefill longer than the ring): the history
            // above is only right from there on, so check the queries whose whole window starts there or later.
            int firstStored = past + n - C;
            var ownerRef = history.Attend(q, n, Hq, W, 0f, 0f, [past], [n]);
            var readerRef = history.Attend(rq, n, Hq, Rw, 0f, 0f, [past], [n]);
            for (int s = 0; s < n; s++)
            {
                int p = past + s;
                bool ownerVisibleStored = Math.Max(0, p - W + 1) >= firstStored;
                var rowRef = ownerRef[(s * Hq * D)..((s + 1) * Hq * D)];
                if (ownerVisibleStored)
                    Assert.IsTrue(MaxDiff(rowRef, r.floats["output"][(s * Hq * D)..((s + 1) * Hq * D)]) < 2e-5, $"owner past={past} s={s}");
                bool readerResident = Math.Max(0, p - Rw + 1) >= firstStored;
                if (readerResident)
                    Assert.IsTrue(MaxDiff(readerRef[(s * Hq * D)..((s + 1) * Hq * D)], r.floats["reader_output"][(s * Hq * D)..((s + 1) * Hq * D)]) < 2e-5,
                        $"reader past={past} s={s}");
            }
            past += n;
        }
    }

    /// <summary>
    /// IO binding with int8 caches: past_key and present_key bound to the same OrtValue over our sbyte[] (with
    /// mixattention.require_inplace = 1, so a copy would fail), over a prefill and decode steps past 3 ring wraps:
    /// the bound arrays hold exactly the bytes, and the outputs are exactly those, of the copying path (plain Run).
    /// </summary>
    [TestMethod]
    public void IoBindingUpdatesABoundInt8CacheInPlace()
    {
        const int W = 4, C = 5;
        using var bound = NativeOpModels.Session(Owner(Int8, W, withNewLengths: true),
            new Dictionary<string, string> { [OpSpec.ConfigRequireInPlace] = "1" });
        using var plain = Session(Owner(Int8, W, withNewLengths: true));
        var rng = new Random(6);
        var ks = Scales(rng, true, 127f);
        var vs = Scales(rng, false, 127f);
        var cacheK = new sbyte[Hkv * C * D];
        var cacheV = new sbyte[Hkv * C * D];
        byte[] copyK = new byte[cacheK.Length], copyV = new byte[cacheV.Length];
        using var kValue = OrtValue.CreateTensorValueFromMemory(cacheK, [1, Hkv, C, D]);
        using var vValue = OrtValue.CreateTensorValueFromMemory(cacheV, [1, Hkv, C, D]);
        using var ksValue = OrtValue.CreateTensorValueFromMemory(ks, [1, Hkv, 1, D]);
        using var vsValue = OrtValue.CreateTensorValueFromMemory(vs, [1]);
        using var binding = bound.CreateIoBinding();
        using var runOptions = new RunOptions();
        int past = 0;
        foreach (int n in new[] { 7 }.Concat(Enumerable.Repeat(1, 3 * C + 2)))
        {
            var q = AttentionReference.Random(rng, n * Hq * D);
            var k = AttentionReference.Random(rng, n * Hkv * D);
            var v = AttentionReference.Random(rng, n * Hkv * D);
            var output = new float[n * Hq * D];
            using var qv = OrtValue.CreateTensorValueFromMemory(q, [1, n, Hq * D]);
            using var kv = OrtValue.CreateTensorValueFromMemory(k, [1, n, Hkv * D]);
            using var vv = OrtValue.CreateTensorValueFromMemory(v, [1, n, Hkv * D]);
            using var pl = OrtValue.CreateTensorValueFromMemory(new[] { past }, [1]);
            using var nl = OrtValue.CreateTensorValueFromMemory(new[] { n }, [1]);
            using var ov = OrtValue.CreateTensorValueFromMemory(output, [1, n, Hq * D]);
            foreach (var (name, value) in new[] { ("query", qv), ("key", kv), ("value", vv), ("past_key", kValue), ("past_value", vValue),
                         ("past_lengths", pl), ("new_lengths", nl), ("k_scale", ksValue), ("v_scale", vsValue) })
                binding.BindInput(name, value);
            binding.BindOutput("output", ov);
            binding.BindOutput("present_key", kValue); // the same OrtValue as past_key
            binding.BindOutput("present_value", vValue);
            bound.RunWithBinding(runOptions, binding);

            var r = Run(plain, Fl("query", q, 1, n, Hq * D), Fl("key", k, 1, n, Hkv * D), Fl("value", v, 1, n, Hkv * D),
                Q("past_key", Int8, copyK, 1, Hkv, C, D), Q("past_value", Int8, copyV, 1, Hkv, C, D), In("past_lengths", [past]),
                In("new_lengths", [n]), Fl("k_scale", ks, 1, Hkv, 1, D), Fl("v_scale", vs, 1));
            copyK = r.bytes["present_key"];
            copyV = r.bytes["present_value"];
            CollectionAssert.AreEqual(r.floats["output"], output, $"output at past {past}");
            CollectionAssert.AreEqual(copyK, cacheK.Select(x => (byte)x).ToArray(), $"bound key cache at past {past}");
            CollectionAssert.AreEqual(copyV, cacheV.Select(x => (byte)x).ToArray(), $"bound value cache at past {past}");
            past += n;
        }
        Assert.IsTrue(cacheK.Any(x => x != 0));
    }

    // ---- Scale rules and errors ----

    private static Exception RunOwnerExpectingError(int cacheType, Tensor[] scales, bool withScales = true, bool withK = true, int queryType = Float)
    {
        const int C = 4;
        var model = Owner(cacheType, 0, withNewLengths: true, withScales, withK);
        return Assert.ThrowsExactly<OnnxRuntimeException>(() =>
        {
            using var s = Session(model);
            Run(s, [Fl("query", new float[Hq * D], 1, 1, Hq * D), Fl("key", new float[Hkv * D], 1, 1, Hkv * D), Fl("value", new float[Hkv * D], 1, 1, Hkv * D),
                cacheType == Float ? Fl("past_key", new float[Hkv * C * D], 1, Hkv, C, D) : Q("past_key", cacheType, new byte[Hkv * C * D], 1, Hkv, C, D),
                cacheType == Float ? Fl("past_value", new float[Hkv * C * D], 1, Hkv, C, D) : Q("past_value", cacheType, new byte[Hkv * C * D], 1, Hkv, C, D),
                In("past_lengths", [0]), In("new_lengths", [1]), .. scales]);
        });
    }

    [TestMethod]
    [DataRow(new long[] { 2 }, DisplayName = "[2]")]
    [DataRow(new long[] { Hkv, D }, DisplayName = "[Hkv, D]")]
    [DataRow(new long[] { 1, Hkv, 1, D + 1 }, DisplayName = "[1, Hkv, 1, D+1]")]
    [DataRow(new long[] { 1, 1, 1, D }, DisplayName = "[1, 1, 1, D]")]
    [DataRow(new long[] { }, DisplayName = "scalar []")]
    public void WrongScaleShapeNamesTheInputAndShape(long[] shape)
    {
        long n = shape.Aggregate(1L, (a, b) => a * b);
        var ex = RunOwnerExpectingError(Int8, [Fl("k_scale", [.. Enumerable.Repeat(0.1f, (int)n)], shape), Fl("v_scale", [0.1f], 1)]);
        StringAssert.Contains(ex.Message, "'k_scale'");
        StringAssert.Contains(ex.Message, "[" + string.Join(", ", shape) + "]");
        StringAssert.Contains(ex.Message, "per channel");
    }

    [TestMethod]
    public void QuantizedCacheRequiresScales()
    {
        var ex = RunOwnerExpectingError(Int8, [], withScales: false);
        StringAssert.Contains(ex.Message, "'k_scale' is required");
        // k_scale given as "" (an empty-name input) is reported missing, naming it.
        ex = RunOwnerExpectingError(Int8, [Fl("v_scale", [0.1f], 1)], withK: false);
        StringAssert.Contains(ex.Message, "'k_scale' is required");
        StringAssert.Contains(ex.Message, "int8");
    }

    [TestMethod]
    public void ScalesAreForbiddenWithFloatCaches()
    {
        var ex = RunOwnerExpectingError(Float, [Fl("k_scale", [0.1f], 1), Fl("v_scale", [0.1f], 1)]);
        StringAssert.Contains(ex.Message, "'k_scale' is given but the cache 'past_key' is not quantized");
    }

    [TestMethod]
    [DataRow(0f)]
    [DataRow(-1f)]
    [DataRow(float.NaN)]
    [DataRow(float.PositiveInfinity)]
    public void ScaleValuesMustBeFiniteAndPositive(float bad)
    {
        var ex = RunOwnerExpectingError(Int8, [Fl("k_scale", [0.1f], 1), Fl("v_scale", [0.1f, bad], 1, Hkv, 1, 1)]);
        StringAssert.Contains(ex.Message, "'v_scale'");
    }

    /// <summary>
    /// Empty-name optional inputs: ORT 1.31 hands the kernel a null input for "" (so new_lengths / cos / sin absent
    /// behave as omitted), provided the node's outputs have declared types. Same numbers as the node that passes
    /// new_lengths explicitly.
    /// </summary>
    [TestMethod]
    public void EmptyNameOptionalInputsAreReportedMissing()
    {
        const int C = 6, S = 3;
        var rng = new Random(2);
        var q = AttentionReference.Random(rng, S * Hq * D);
        var k = AttentionReference.Random(rng, S * Hkv * D);
        var v = AttentionReference.Random(rng, S * Hkv * D);
        var scales = new[] { Fl("k_scale", [0.03f], 1), Fl("v_scale", [0.02f, 0.04f], 1, Hkv, 1, 1) };
        Tensor[] Common() => [Fl("query", q, 1, S, Hq * D), Fl("key", k, 1, S, Hkv * D), Fl("value", v, 1, S, Hkv * D),
            Q("past_key", Int8, new byte[Hkv * C * D], 1, Hkv, C, D), Q("past_value", Int8, new byte[Hkv * C * D], 1, Hkv, C, D), In("past_lengths", [0])];
        using var noLengths = Session(Owner(Int8, 0, withNewLengths: false)); // new_lengths, cos, sin all ""
        using var withLengths = Session(Owner(Int8, 0, withNewLengths: true)); // cos, sin ""
        var a = Run(noLengths, [.. Common(), .. scales]);
        var b = Run(withLengths, [.. Common(), In("new_lengths", [S]), .. scales]);
        Assert.AreEqual(0.0, MaxDiff(a.floats["output"], b.floats["output"]));
        CollectionAssert.AreEqual(a.bytes["present_key"], b.bytes["present_key"]);
        Assert.IsTrue(a.bytes["present_key"].Any(x => x != 0), "the chunk was written");
        // new_lengths = 1 through the same node: rows 1.. are padding (zeros), proving new_lengths is read there.
        var c = Run(withLengths, [.. Common(), In("new_lengths", [1]), .. scales]);
        Assert.IsTrue(c.floats["output"].Skip(Hq * D).All(x => x == 0f));
    }
}
