namespace MixAttention.Onnx.Plan;

/// <summary>
/// What a cache plan may say. The plan is read from the model's metadata, which anyone who can edit the file can
/// change, so every number in it is checked against these bounds (and against each other) before the runtime sizes
/// a cache from it: a negative head count or a ten-million-position window is refused here, not multiplied into a
/// byte count. The bounds are far above any real model (see docs/security.md).
/// </summary>
internal static class CachePlanLimits
{
    /// <summary>Largest plan document read (characters).</summary>
    public const int MaxJsonChars = 16 << 20;
    /// <summary>Most attention layers.</summary>
    public const int MaxLayers = 1 << 16;
    /// <summary>Most KV heads of one cache.</summary>
    public const int MaxKvHeads = 1 << 12;
    /// <summary>Largest head size.</summary>
    public const int MaxHeadSize = 1 << 14;
    /// <summary>Largest sliding window (positions).</summary>
    public const int MaxWindow = 1 << 30;
    /// <summary>Largest block of a paged cache (positions).</summary>
    public const int MaxBlockSize = 1 << 16;
    /// <summary>Longest input/output name.</summary>
    public const int MaxNameLength = 4096;

    /// <summary>Throws <see cref="MixAttentionException"/> naming the first value out of bounds or inconsistent.</summary>
    public static void Validate(CachePlan plan)
    {
        static MixAttentionException Bad(string message) => new($"cache plan: {message} The plan in the model's metadata is damaged or was edited; convert the model again.");
        if (plan.LayerCount < 1 || plan.LayerCount > MaxLayers)
            throw Bad($"'layers' is {plan.LayerCount}; it must be between 1 and {MaxLayers}.");
        if (plan.KvSource.Count != plan.LayerCount || plan.Windows.Count != plan.LayerCount)
            throw Bad($"'kv_source' has {plan.KvSource.Count} and 'windows' {plan.Windows.Count} entries for {plan.LayerCount} layers.");
        for (int l = 0; l < plan.LayerCount; l++)
        {
            if (plan.KvSource[l] < 0 || plan.KvSource[l] >= plan.LayerCount)
                throw Bad($"kv_source[{l}] = {plan.KvSource[l]} is not a layer (0..{plan.LayerCount - 1}).");
            if (plan.Windows[l] < 0 || plan.Windows[l] > MaxWindow)
                throw Bad($"windows[{l}] = {plan.Windows[l]} must be between 0 (global) and {MaxWindow}.");
        }
        if (plan.Caches.Count < 1 || plan.Caches.Count > plan.LayerCount)
            throw Bad($"it has {plan.Caches.Count} caches for {plan.LayerCount} layers.");
        var owners = new HashSet<int>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        void Name(string? name, string what, bool unique)
        {
            if (string.IsNullOrEmpty(name) || name.Length > MaxNameLength || name.Contains('\0'))
                throw Bad($"{what} is {(string.IsNullOrEmpty(name) ? "empty" : "not a usable name")}.");
            if (unique && !names.Add(name))
                throw Bad($"{what} '{name}' is named twice.");
        }
        foreach (var c in plan.Caches)
        {
            string what = $"the cache of layer {c.Owner}";
            if (c.Owner < 0 || c.Owner >= plan.LayerCount)
                throw Bad($"a cache's owner {c.Owner} is not a layer (0..{plan.LayerCount - 1}).");
            if (!owners.Add(c.Owner))
                throw Bad($"layer {c.Owner} owns two caches.");
            if (plan.KvSource[c.Owner] != c.Owner)
                throw Bad($"layer {c.Owner} owns a cache but kv_source says it reads layer {plan.KvSource[c.Owner]}.");
            if (c.KvNumHeads < 1 || c.KvNumHeads > MaxKvHeads)
                throw Bad($"{what} has kv_num_heads = {c.KvNumHeads}; it must be between 1 and {MaxKvHeads}.");
            if (c.HeadSize < 1 || c.HeadSize > MaxHeadSize)
                throw Bad($"{what} has head_size = {c.HeadSize}; it must be between 1 and {MaxHeadSize}.");
            if (c.Window < 0 || c.Window > MaxWindow)
                throw Bad($"{what} has window = {c.Window}; it must be between 0 (global) and {MaxWindow}.");
            if (c.Capacity == CapacityRule.Window && c.Window == 0)
                throw Bad($"{what} is a ring (capacity 'window') with window 0.");
            if (string.IsNullOrEmpty(c.DType) || c.DType.Length > 32)
                throw Bad($"{what} has no usable dtype.");
            if (c.IsQuantized)
            {
                if (c.Scales is not { } scales)
                    throw Bad($"{what} is {c.DType} (quantized) but names no scales.");
                Name(scales.Key, $"the key scales of {what}", false);
                Name(scales.Value, $"the value scales of {what}", false);
                if (scales.Key == scales.Value)
                    throw Bad($"{what} names '{scales.Key}' as both its key and its value scales.");
            }
            else if (c.Scales is not null)
                throw Bad($"{what} is {c.DType}, which is not quantized, but names scales.");
            if (c.Storage is { } storage && !(storage == "uint8" && ElementTypes.FromDTypeName(c.DType) == ElementTypes.Float8E4M3))
                throw Bad($"{what} is {c.DType} stored as '{(storage.Length > 32 ? storage[..32] + "…" : storage)}'; only fp8e4m3 caches may be stored as uint8.");
            if (c.BlockSize is { } bs)
            {
                if (bs < 1 || bs > MaxBlockSize)
                    throw Bad($"{what} has block_size = {bs}; it must be between 1 and {MaxBlockSize}.");
                if (c.IsSliding || c.Capacity != CapacityRule.MaxLength)
                    throw Bad($"{what} is paged (block_size {bs}) but not a global 'max_length' cache; only global caches are paged.");
                if (plan.BlockTable is null)
                    throw Bad($"{what} is paged (block_size {bs}) but the plan names no 'inputs.block_table'.");
                if (plan.Backend is not (BackendName.Ops or BackendName.OrtGqa))
                    throw Bad($"{what} is paged (block_size {bs}) but the backend is '{(plan.Backend.Length > 32 ? plan.Backend[..32] + "…" : plan.Backend)}'; only the ops and ort-gqa backends page caches.");
            }
            Name(c.PastKey, $"the past key of {what}", true);
            Name(c.PastValue, $"the past value of {what}", true);
            Name(c.PresentKey, $"the present key of {what}", true);
            Name(c.PresentValue, $"the present value of {what}", true);
            foreach (var r in c.Readers)
                if (r < 0 || r >= plan.LayerCount || plan.KvSource[r] != c.Owner)
                    throw Bad($"{what} lists reader {r}, which {(r < 0 || r >= plan.LayerCount ? "is not a layer" : $"reads layer {plan.KvSource[r]}")}.");
        }
        for (int l = 0; l < plan.LayerCount; l++)
            if (!owners.Contains(plan.KvSource[l]))
                throw Bad($"layer {l} reads the cache of layer {plan.KvSource[l]}, which owns none.");
        if (plan.MaxPositions is < 1)
            throw Bad($"'max_positions' is {plan.MaxPositions}; it must be >= 1 (rows of the model's rotary tables) or absent.");
        if (plan.ModelDType is { } modelType && ElementTypes.FromDTypeName(modelType) is not (ElementTypes.Float or ElementTypes.Float16 or ElementTypes.BFloat16))
            throw Bad($"'model_dtype' is '{(modelType.Length > 32 ? modelType[..32] + "…" : modelType)}'; it must be fp32, fp16 or bf16.");
        Name(plan.InputIds, "inputs.input_ids", false);
        Name(plan.Logits, "logits", false);
        if (plan.BlockTable is not null && !plan.Caches.Any(c => c.IsPaged))
            throw Bad("'inputs.block_table' is named but no cache is paged (block_size).");
        foreach (var (n, what) in new[] { (plan.PositionIds, "inputs.position_ids"), (plan.AttentionMask, "inputs.attention_mask"), (plan.PastLengths, "inputs.past_lengths"), (plan.NewLengths, "inputs.new_lengths"), (plan.BlockTable, "inputs.block_table") })
            if (n is not null) Name(n, what, false);
    }
}
