using System.Text.Json;
using System.Text.Json.Nodes;

namespace MixAttention.Onnx.Plan;

/// <summary>
/// The one document between converter and runtime, stored as versioned JSON in the converted model's
/// <c>metadata_props</c> under <see cref="MetadataKey"/>: which layers own caches, their kind and size,
/// who reads them, and the names of the inputs the runtime feeds. The runtime never re-derives this from the graph.
/// </summary>
public sealed record CachePlan
{
    /// <summary>metadata_props key.</summary>
    public const string MetadataKey = "mixattention.cache_plan";
    /// <summary>
    /// Newest format version this build reads and writes: 2 adds quantized caches (a cache's <c>scales</c>), 3 paged global
    /// caches (a cache's <c>block_size</c> and the <c>block_table</c> input). A plan is written with the lowest version
    /// that can say it (float, contiguous: 1), so older builds keep reading what they understand.
    /// </summary>
    public const int CurrentVersion = 3;
    /// <summary>Oldest format version this build reads.</summary>
    public const int MinVersion = 1;

    /// <summary>Backend the model was lowered to: <c>ops</c>, <c>ort-gqa</c> or <c>reference</c> (<see cref="BackendName"/>).</summary>
    public required string Backend { get; init; }
    /// <summary>
    /// True when the model's attention runs in libmixattention_ops.so's custom ops (<see cref="OpSpec.Domain"/>): the
    /// library must be registered with the session, and every node can run on the CUDA execution provider (no shape
    /// arithmetic on the CPU), so a decode step can be captured in a CUDA graph.
    /// </summary>
    public bool RunsOnCustomOps => Backend == BackendName.Ops;
    /// <summary>The layout in compact form.</summary>
    public required string Layout { get; init; }
    /// <summary>The layout's name (preset, file, custom).</summary>
    public string LayoutName { get; init; } = "custom";
    /// <summary>Number of attention layers.</summary>
    public required int LayerCount { get; init; }
    /// <summary>For each layer, the owner whose cache it reads (itself for owners).</summary>
    public required IReadOnlyList<int> KvSource { get; init; }
    /// <summary>For each layer, its window (0 = global).</summary>
    public required IReadOnlyList<int> Windows { get; init; }
    /// <summary>The caches, one per owner, ascending.</summary>
    public required IReadOnlyList<CacheEntry> Caches { get; init; }
    /// <summary>Token ids input.</summary>
    public required string InputIds { get; init; }
    /// <summary>Position ids input (int64 [B,S]), when the model has one.</summary>
    public string? PositionIds { get; init; }
    /// <summary>Attention mask input (int64 [B, total]), when the model still uses one.</summary>
    public string? AttentionMask { get; init; }
    /// <summary>Per-sequence tokens already processed, int32 [B] (ops / ort-gqa backends).</summary>
    public string? PastLengths { get; init; }
    /// <summary>Per-sequence count of real tokens in this step, int32 [B] (ops backend): rows past it are right padding.</summary>
    public string? NewLengths { get; init; }
    /// <summary>Block table input (int32 [B, max_blocks_per_seq]) of a model with paged caches (<see cref="CacheEntry.BlockSize"/>); null otherwise.</summary>
    public string? BlockTable { get; init; }
    /// <summary>
    /// The axis order of the paged pools: token-major <c>[num_blocks, block_size, Hkv, D]</c> for the ort-gqa backend,
    /// whose paged layers are ORT's PagedAttention; head-major <c>[num_blocks, Hkv, block_size, D]</c> for our ops
    /// (docs/ops.md, "Paged caches"). A block holds the same bytes either way.
    /// </summary>
    public bool TokenMajorPools => Backend == BackendName.OrtGqa;
    /// <summary>Logits output.</summary>
    public required string Logits { get; init; }
    /// <summary>
    /// The element type of the model's attention (queries, outputs; fp32, fp16, bf16): what an unquantized cache of
    /// this model holds. Null in plans that predate it; every cache then has this type.
    /// </summary>
    public string? ModelDType { get; init; }
    /// <summary>
    /// The longest sequence the model's position tables allow: the rows of the rotary cos/sin caches its attention reads
    /// (the fewest over layers). Null when the model has no such table (rotary computed from the positions, or none), and
    /// in plans that predate it. A session with a longer <c>MaxLength</c> would fail or read past the table mid-sequence.
    /// </summary>
    public int? MaxPositions { get; init; }

    /// <summary>The version <see cref="ToJson"/> writes: 3 when a cache is paged, 2 when one is quantized, else 1.</summary>
    public int FormatVersion => Caches.Any(c => c.IsPaged) || BlockTable is not null ? 3
        : Caches.Any(c => c.IsQuantized || c.Scales is not null) ? 2 : MinVersion;

    /// <summary>The versioned JSON form.</summary>
    public string ToJson()
    {
        var caches = new JsonArray();
        foreach (var c in Caches)
        {
            var entry = new JsonObject
            {
                ["owner"] = c.Owner,
                ["kind"] = c.IsSliding ? "sliding" : "global",
                ["window"] = c.Window,
                ["capacity"] = c.Capacity switch { CapacityRule.MaxLength => "max_length", CapacityRule.Window => "window", _ => "growing" },
                ["kv_num_heads"] = c.KvNumHeads,
                ["head_size"] = c.HeadSize,
                ["dtype"] = c.DType,
                ["past_key"] = c.PastKey,
                ["past_value"] = c.PastValue,
                ["present_key"] = c.PresentKey,
                ["present_value"] = c.PresentValue,
                ["readers"] = new JsonArray(c.Readers.Select(r => (JsonNode)JsonValue.Create(r)).ToArray()),
            };
            if (c.Storage is { } storage) entry["storage"] = storage;
            if (c.BlockSize is { } blockSize) entry["block_size"] = blockSize;
            if (c.Scales is { } scales)
                entry["scales"] = new JsonObject
                {
                    ["granularity"] = KvScaleTensors.Name(scales.Granularity),
                    ["key"] = scales.Key,
                    ["value"] = scales.Value,
                };
            caches.Add((JsonNode)entry);
        }
        var o = new JsonObject
        {
            ["version"] = FormatVersion,
            ["backend"] = Backend,
            ["layout"] = Layout,
            ["layout_name"] = LayoutName,
            ["layers"] = LayerCount,
            ["kv_source"] = new JsonArray(KvSource.Select(r => (JsonNode)JsonValue.Create(r)).ToArray()),
            ["windows"] = new JsonArray(Windows.Select(r => (JsonNode)JsonValue.Create(r)).ToArray()),
            ["caches"] = caches,
            ["inputs"] = new JsonObject
            {
                ["input_ids"] = InputIds,
                ["position_ids"] = PositionIds,
                ["attention_mask"] = AttentionMask,
                ["past_lengths"] = PastLengths,
                ["new_lengths"] = NewLengths,
            },
            ["logits"] = Logits,
        };
        if (ModelDType is not null) o["model_dtype"] = ModelDType;
        if (MaxPositions is not null) o["max_positions"] = MaxPositions;
        if (BlockTable is not null) ((JsonObject)o["inputs"]!)["block_table"] = BlockTable;
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = false });
    }

    /// <summary>
    /// Parses the JSON form; a newer major version or a malformed document is a clear error. Nothing in it is trusted:
    /// a value of the wrong JSON type, a count or size outside <see cref="CachePlanLimits"/>, or names and layers that
    /// contradict each other are refused here (<see cref="MixAttentionException"/>), before anyone sizes a cache from it.
    /// </summary>
    public static CachePlan FromJson(string json)
    {
        if (json is null || json.Length > CachePlanLimits.MaxJsonChars)
            throw new MixAttentionException($"cache plan is {(json is null ? "missing" : $"{json.Length:N0} characters, more than the {CachePlanLimits.MaxJsonChars:N0} allowed")}.");
        JsonObject o;
        try { o = JsonNode.Parse(json) as JsonObject ?? throw new MixAttentionException("cache plan is not a JSON object"); }
        catch (JsonException e) { throw new MixAttentionException($"cache plan is not valid JSON: {e.Message}", e); }
        CachePlan plan;
        try { plan = Read(o); }
        // GetValue<T> on a value of another JSON type (a string where a number belongs, 1.5 for an int, an array
        // where a string belongs) throws these; they are the document's fault, not ours.
        catch (Exception e) when (e is InvalidOperationException or FormatException or OverflowException or ArgumentException)
        {
            throw new MixAttentionException($"cache plan is malformed: {e.Message}", e);
        }
        CachePlanLimits.Validate(plan);
        return plan;
    }

    private static CachePlan Read(JsonObject o)
    {
        int version = o["version"]?.GetValue<int>() ?? 0;
        if (version < MinVersion || version > CurrentVersion)
            throw new MixAttentionException($"cache plan version {version} is not supported by this build (it reads {MinVersion} to {CurrentVersion}); convert the model again with this version.");
        T Req<T>(JsonNode? n, string what) => n is null ? throw new MixAttentionException($"cache plan lacks '{what}'.") : n.GetValue<T>();
        int Item(JsonNode? n, string what) => n is null ? throw new MixAttentionException($"cache plan: '{what}' has a null entry.") : n.GetValue<int>();
        var inputs = o["inputs"] as JsonObject ?? throw new MixAttentionException("cache plan lacks 'inputs'.");
        return new CachePlan
        {
            Backend = Req<string>(o["backend"], "backend"),
            Layout = Req<string>(o["layout"], "layout"),
            LayoutName = o["layout_name"]?.GetValue<string>() ?? "custom",
            LayerCount = Req<int>(o["layers"], "layers"),
            KvSource = (o["kv_source"] as JsonArray ?? throw new MixAttentionException("cache plan lacks 'kv_source'.")).Select(n => Item(n, "kv_source")).ToArray(),
            Windows = (o["windows"] as JsonArray ?? throw new MixAttentionException("cache plan lacks 'windows'.")).Select(n => Item(n, "windows")).ToArray(),
            Caches = (o["caches"] as JsonArray ?? throw new MixAttentionException("cache plan lacks 'caches'.")).Select(n =>
            {
                var c = n as JsonObject ?? throw new MixAttentionException("cache plan: a cache entry is not an object.");
                return new CacheEntry
                {
                    Owner = Req<int>(c["owner"], "caches[].owner"),
                    Window = Req<int>(c["window"], "caches[].window"),
                    Capacity = Req<string>(c["capacity"], "caches[].capacity") switch
                    {
                        "max_length" => CapacityRule.MaxLength,
                        "window" => CapacityRule.Window,
                        "growing" => CapacityRule.Growing,
                        var other => throw new MixAttentionException($"cache plan: unknown capacity rule '{other}'."),
                    },
                    KvNumHeads = Req<int>(c["kv_num_heads"], "caches[].kv_num_heads"),
                    HeadSize = Req<int>(c["head_size"], "caches[].head_size"),
                    DType = Req<string>(c["dtype"], "caches[].dtype"),
                    PastKey = Req<string>(c["past_key"], "caches[].past_key"),
                    PastValue = Req<string>(c["past_value"], "caches[].past_value"),
                    PresentKey = Req<string>(c["present_key"], "caches[].present_key"),
                    PresentValue = Req<string>(c["present_value"], "caches[].present_value"),
                    Readers = (c["readers"] as JsonArray ?? new JsonArray()).Select(r => Item(r, "caches[].readers")).ToArray(),
                    Storage = c["storage"]?.GetValue<string>(),
                    BlockSize = c["block_size"] switch
                    {
                        null => null,
                        var size when version >= 3 => size.GetValue<int>(),
                        _ => throw new MixAttentionException($"cache plan: a version-{version} plan has no paged caches, but a cache lists 'block_size'."),
                    },
                    Scales = c["scales"] switch
                    {
                        null => null,
                        JsonObject sc when version >= 2 => new KvScaleTensors(
                            Req<string>(sc["key"], "caches[].scales.key"),
                            Req<string>(sc["value"], "caches[].scales.value"),
                            KvScaleTensors.Parse(Req<string>(sc["granularity"], "caches[].scales.granularity"))
                                ?? throw new MixAttentionException($"cache plan: unknown scale granularity '{sc["granularity"]}' (tensor, head or channel).")),
                        JsonObject => throw new MixAttentionException($"cache plan: a version-{version} plan has no quantized caches, but a cache lists 'scales'."),
                        _ => throw new MixAttentionException("cache plan: 'caches[].scales' is not an object."),
                    },
                };
            }).ToArray(),
            InputIds = Req<string>(inputs["input_ids"], "inputs.input_ids"),
            PositionIds = inputs["position_ids"]?.GetValue<string>(),
            AttentionMask = inputs["attention_mask"]?.GetValue<string>(),
            PastLengths = inputs["past_lengths"]?.GetValue<string>(),
            NewLengths = inputs["new_lengths"]?.GetValue<string>(),
            BlockTable = inputs["block_table"] switch
            {
                null => null,
                var table when version >= 3 => table.GetValue<string>(),
                _ => throw new MixAttentionException($"cache plan: a version-{version} plan has no paged caches, but its inputs list 'block_table'."),
            },
            Logits = Req<string>(o["logits"], "logits"),
            ModelDType = o["model_dtype"]?.GetValue<string>(),
            MaxPositions = o["max_positions"]?.GetValue<int>(),
        };
    }

    /// <summary>Reads the plan from a model's metadata, or null when the model has none (an unconverted model).</summary>
    internal static CachePlan? FromModel(Onnx.Proto.ModelProto model)
    {
        var entry = model.MetadataProps.FirstOrDefault(p => p.Key == MetadataKey);
        return entry is null ? null : FromJson(entry.Value);
    }

    /// <summary>Writes the plan into a model's metadata (replacing an older one).</summary>
    internal void WriteTo(Onnx.Proto.ModelProto model)
    {
        var old = model.MetadataProps.Where(p => p.Key == MetadataKey).ToList();
        foreach (var p in old) model.MetadataProps.Remove(p);
        model.MetadataProps.Add(new Onnx.Proto.StringStringEntryProto { Key = MetadataKey, Value = ToJson() });
    }
}
