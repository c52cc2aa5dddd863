using System.Text.Json.Nodes;
using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Onnx.Proto;

namespace MixAttention.Onnx.Inspection;

/// <summary>What <c>mixattn inspect</c> reports: the detected layers and their KV cache cost.</summary>
public sealed record ModelInspection(string ModelPath, DetectionReport Detection, int Context, int Batch)
{
    /// <summary>Layers found.</summary>
    public IReadOnlyList<AttentionSite> Layers => Detection.Sites;

    /// <summary>KV bytes the model as exported keeps at <see cref="Context"/> × <see cref="Batch"/>: every layer a full-length cache.</summary>
    public long KvBytesAsExported => checked(Layers.Sum(s => CacheBytes(s, Context, Batch, window: 0)));

    /// <summary>KV bytes if every layer kept only its own window (the <c>native</c> layout).</summary>
    public long KvBytesWithOwnWindows => checked(Layers.Sum(s => CacheBytes(s, Context, Batch, s.Window)));

    /// <summary>Bytes of one layer's K and V cache at a context length: min(context, window) positions when windowed.</summary>
    public static long CacheBytes(AttentionSite site, long context, long batch, int window)
    {
        long positions = window > 0 ? Math.Min(context, window) : context;
        long elem = OnnxModel.ElementSize(site.ElementType) ?? 4;
        return checked(2 * batch * site.KvNumHeads * positions * site.HeadSize * elem);
    }

    /// <summary>Loads a model and detects its attention.</summary>
    public static ModelInspection Run(string modelPath, int context, int batch, OnnxLoadOptions? options = null)
    {
        if (context <= 0) throw new MixAttentionException($"--context must be positive (got {context}).");
        if (batch <= 0) throw new MixAttentionException($"--batch must be positive (got {batch}).");
        var model = OnnxModel.Load(modelPath, options);
        var report = AttentionDetector.Detect(model);
        var inspection = new ModelInspection(model.SourcePath!, report, context, batch);
        try { _ = inspection.KvBytesAsExported + inspection.KvBytesWithOwnWindows; }
        catch (OverflowException)
        {
            throw new MixAttentionException($"the KV cache at --context {context} and --batch {batch} would be more than {long.MaxValue:N0} bytes; lower them.");
        }
        return inspection;
    }

    /// <summary>Readable ONNX element type name.</summary>
    public static string TypeName(int elementType) => ((TensorProto.Types.DataType)elementType).ToString().ToLowerInvariant() switch
    {
        "float" => "fp32",
        "float16" => "fp16",
        "bfloat16" => "bf16",
        var other => other,
    };

    /// <summary>
    /// The stable machine-readable form (<c>--json</c>): version, model, styles, a top-level <c>layers</c>
    /// array with one object per attention layer, <c>issues</c>, and the KV cache totals.
    /// </summary>
    public JsonObject ToJson()
    {
        var layers = new JsonArray();
        foreach (var s in Layers)
        {
            var layer = new JsonObject
            {
                ["layer"] = s.Layer,
                ["style"] = s.Style.ToString(),
                ["nodes"] = new JsonArray(s.Nodes.Select(n => (JsonNode)JsonValue.Create(n)!).ToArray()),
                ["num_heads"] = s.NumHeads,
                ["kv_num_heads"] = s.KvNumHeads,
                ["head_size"] = s.HeadSize,
                ["scale"] = s.Scale,
                ["softcap"] = s.Softcap,
                ["window"] = s.Window,
                ["window_source"] = s.WindowSource.ToString(),
                ["rotary"] = s.Rotary.Kind.ToString(),
                ["dtype"] = TypeName(s.ElementType),
                ["query"] = s.Query,
                ["key"] = s.Key,
                ["value"] = s.Value,
                ["output"] = s.Output,
                ["kv_cache_bytes"] = CacheBytes(s, Context, Batch, 0),
            };
            if (s.Cache is { } c)
                layer["cache"] = new JsonObject
                {
                    ["past_key"] = c.PastKey,
                    ["past_value"] = c.PastValue,
                    ["present_key"] = c.PresentKey,
                    ["present_value"] = c.PresentValue,
                    ["packed"] = c.IsPacked,
                };
            layers.Add((JsonNode)layer);
        }
        return new JsonObject
        {
            ["version"] = 1,
            ["model"] = ModelPath,
            ["styles"] = new JsonArray(Detection.Styles.Select(s => (JsonNode)JsonValue.Create(s.ToString())!).ToArray()),
            ["layers"] = layers,
            ["issues"] = new JsonArray(Detection.Issues.Select(i => (JsonNode)new JsonObject { ["node"] = i.Node, ["message"] = i.Message }).ToArray()),
            ["kv_cache"] = new JsonObject
            {
                ["context"] = Context,
                ["batch"] = Batch,
                ["bytes_as_exported"] = KvBytesAsExported,
                ["bytes_with_own_windows"] = KvBytesWithOwnWindows,
            },
        };
    }
}
