using System.Text.Json.Nodes;
using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Layouts;
using MixAttention.Onnx.Lowering;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Inspection;

/// <summary>What <c>mixattn inspect</c> reports: the detected layers and their KV cache cost.</summary>
public sealed record ModelInspection(string ModelPath, DetectionReport Detection, int Context, int Batch)
{
    /// <summary>The cache plan of a model this tool converted (then <see cref="Detection"/> is empty); null for a source export.</summary>
    public CachePlan? Plan { get; init; }

    /// <summary>Layers found (a source export).</summary>
    public IReadOnlyList<AttentionSite> Layers => Detection.Sites;

    /// <summary>Attention layers: detected, or stated by the cache plan of a converted model.</summary>
    public int LayerCount => Plan?.LayerCount ?? Layers.Count;

    /// <summary>KV bytes a converted model keeps at <see cref="Context"/> × <see cref="Batch"/>: one cache per owner, rings at their capacity.</summary>
    public long KvBytesConverted => Plan is null ? 0 : Plan.Caches.Sum(c => PlanCacheBytes(c, Context, Batch));

    /// <summary><see cref="KvBytesConverted"/> split by cache element type (fp32, fp16, bf16, int8, fp8e4m3).</summary>
    public IReadOnlyDictionary<string, long> KvBytesByDType => Plan is null ? new Dictionary<string, long>()
        : Plan.Caches.GroupBy(c => c.DType).ToDictionary(g => g.Key, g => g.Sum(c => PlanCacheBytes(c, Context, Batch)));

    /// <summary>Bytes of one cache of a converted model (a ring holds its window, plus a chunk when other layers read it).</summary>
    internal static long PlanCacheBytes(CacheEntry c, long context, long batch)
    {
        long positions = KvMemory.Capacity(context, c.Window, c.Readers.Count > 0);
        long elem = ElementTypes.SizeOfDType(c.DType) ?? (c.DType == "fp8" ? 1 : 4);
        return 2 * batch * c.KvNumHeads * positions * c.HeadSize * elem;
    }

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
        if (CachePlan.FromModel(model.Proto) is { } plan)
            return new ModelInspection(model.SourcePath!, new DetectionReport(Array.Empty<AttentionSite>(), Array.Empty<DetectionIssue>()), context, batch) { Plan = plan };
        var report = AttentionDetector.Detect(model);
        var inspection = new ModelInspection(model.SourcePath!, report, context, batch);
        try { _ = inspection.KvBytesAsExported + inspection.KvBytesWithOwnWindows; }
        catch (OverflowException)
        {
            throw new MixAttentionException($"the KV cache at --context {context} and --batch {batch} would be more than {long.MaxValue:N0} bytes; lower them.");
        }
        return inspection;
    }

    /// <summary>
    /// The stable machine-readable form (<c>--json</c>): version, model, styles, a top-level <c>layers</c>
    /// array with one object per attention layer, <c>issues</c>, and the KV cache totals.
    /// </summary>
    public JsonObject ToJson()
    {
        if (Plan is { } plan)
            return new JsonObject
            {
                ["version"] = 1,
                ["model"] = ModelPath,
                ["converted"] = true,
                ["layout"] = plan.Layout,
                ["layout_name"] = plan.LayoutName,
                ["backend"] = plan.Backend,
                ["layers"] = new JsonArray(Enumerable.Range(0, plan.LayerCount).Select(l => (JsonNode)new JsonObject
                {
                    ["layer"] = l,
                    ["kind"] = plan.Windows[l] > 0 ? "sliding" : "global",
                    ["window"] = plan.Windows[l],
                    ["kv_source"] = plan.KvSource[l],
                }).ToArray()),
                ["issues"] = new JsonArray(),
                ["cache_plan"] = JsonNode.Parse(plan.ToJson()),
                ["kv_cache"] = new JsonObject
                {
                    ["context"] = Context, ["batch"] = Batch, ["bytes"] = KvBytesConverted,
                    ["bytes_by_dtype"] = new JsonObject(KvBytesByDType.Select(p => KeyValuePair.Create(p.Key, (JsonNode?)JsonValue.Create(p.Value)))),
                },
            };
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
                ["shares_kv_of"] = s.SharesKvOf,
                ["rotary"] = s.Rotary.Kind.ToString(),
                ["dtype"] = ElementTypes.DTypeName(s.ElementType),
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
            ["issues"] = new JsonArray(Detection.Issues.Select(i => (JsonNode)new JsonObject { ["node"] = i.Node, ["message"] = i.Message, ["blocking"] = i.Blocking }).ToArray()),
            ["complete"] = Detection.IsComplete,
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
