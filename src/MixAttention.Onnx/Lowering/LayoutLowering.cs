using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Graph;
using MixAttention.Onnx.Layouts;
using MixAttention.Onnx.Onnx.Proto;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Lowering;

/// <summary>
/// Applies a layout to a graph through a backend: replaces every site's attention, gives the graph
/// KV inputs/outputs only for owner layers (<c>past_key_values.N.*</c> / <c>present.N.*</c>, N = owner),
/// removes what became dead (reader K/V projections and their weights), and writes the cache plan.
/// </summary>
internal static class LayoutLowering
{
    /// <summary>Backends by command-line name.</summary>
    public static ILoweringBackend Backend(string name) => name switch
    {
        BackendName.Ops => new OpsBackend(),
        BackendName.Reference => new ReferenceBackend(),
        BackendName.OrtGqa => new OrtGqaBackend(),
        _ => throw new MixAttentionException($"unknown backend '{name}': use ops, ort-gqa or reference."),
    };

    /// <summary>Rewrites <paramref name="graph"/> in place.</summary>
    public static LoweringResult Apply(ModelGraph graph, IReadOnlyList<AttentionSite> sites, MixAttentionLayout layout,
        ILoweringBackend backend, IProgress<(int Done, int Total)>? progress = null, IReadOnlyDictionary<int, CacheQuantization>? quantization = null,
        int? pagedBlockSize = null)
    {
        if (pagedBlockSize is { } requested)
        {
            if (backend.Name == BackendName.Reference)
                throw new MixAttentionException("--paged needs the ops backend (our custom ops read caches through a block table) or ort-gqa (ORT's PagedAttention, full-attention layouts); the reference backend has no paged caches.");
            if (requested < 1 || requested > CachePlanLimits.MaxBlockSize)
                throw new MixAttentionException($"--block-size {requested} must be between 1 and {CachePlanLimits.MaxBlockSize}.");
        }
        if (layout.Count != sites.Count)
            throw new MixAttentionException($"the layout has {layout.Count} layers but the model has {sites.Count} attention layers.");
        foreach (var s in sites)
            if (s.Cache is null && s.SharesKvOf is null)
                throw new MixAttentionException($"layer {s.Layer} (node '{s.Nodes[0]}') has no KV cache inputs/outputs; export the model with past_key_values (use_cache=True) before converting.");
        var cached = sites.Where(s => s.Cache is not null).ToList();

        for (int layer = 0; layer < sites.Count; layer++)
            if (layout[layer].IsOwner && sites[layer] is { Key: null, SharesKvOf: { } src } && sites[layer].QkvLayout != HeadLayout.PackedQkv)
                throw new MixAttentionException($"layer {layer} computes no keys/values of its own (in the source it reads layer {src}'s cache): " +
                    $"the layout must make it read a cache (e.g. layer {src}'s), not own one.");

        var ctx = new LoweringContext(graph, sites, layout) { PagedBlockSize = pagedBlockSize };
        foreach (var (owner, asked) in quantization ?? new Dictionary<int, CacheQuantization>())
        {
            if (!layout[owner].IsOwner)
                throw new InvalidOperationException($"layer {owner} is quantized but owns no cache");
            var site = sites[owner];
            // GQA scales per tensor or per channel only; a per-head scale repeated over the head's channels is the same quantization.
            var q = backend.Name == BackendName.OrtGqa ? Conversion.KvQuantPlanner.ExpandHeadsToChannels(asked, site.KvNumHeads, site.HeadSize) : asked;
            ctx.Quantized[owner] = (q, ScaleInitializer(graph, $"kv_scales.{owner}.key", q.KeyScales, q.Granularity, site),
                ScaleInitializer(graph, $"kv_scales.{owner}.value", q.ValueScales, q.Granularity, site));
        }
        backend.Check(ctx);

        // 1. The old cache graph inputs/outputs go; owners get canonical ones with the backend's axes.
        var oldCacheInputs = cached.SelectMany(s => new[] { s.Cache!.PastKey, s.Cache.PastValue }).OfType<string>().Distinct().ToList();
        foreach (var s in cached)
        {
            graph.RemoveGraphOutput(s.Cache!.PresentKey);
            if (s.Cache.PresentValue is { } pv) graph.RemoveGraphOutput(pv);
        }
        foreach (var name in oldCacheInputs) graph.RemoveGraphInput(name);

        var presents = new Dictionary<int, (string TempKey, string TempValue)>();
        for (int layer = 0; layer < sites.Count; layer++)
        {
            var site = sites[layer];
            var a = layout[layer];
            (string Key, string Value) cache;
            if (a.IsOwner)
            {
                var (pastAxis, _) = backend.CacheAxis(a);
                cache = ($"past_key_values.{layer}.key", $"past_key_values.{layer}.value");
                // A past input whose old name is still read by not-yet-dead nodes is fine: they die below.
                int cacheType = StorageType(backend, ctx.QuantizationOf(layer)?.Format.ElementType ?? site.ElementType);
                foreach (var name in new[] { cache.Key, cache.Value })
                    graph.AddGraphInput(ctx.IsPaged(layer)
                        ? GraphBuilder.TensorInfo(name, cacheType, backend.PoolShape(site, ctx.PagedBlockSize!.Value))
                        : GraphBuilder.TensorInfo(name, cacheType, ctx.BatchDim, (long)site.KvNumHeads, pastAxis, (long)site.HeadSize));
            }
            else
            {
                cache = presents.TryGetValue(a.KvSource, out var owned)
                    ? (owned.TempKey, owned.TempValue)
                    : throw new MixAttentionException($"layer {layer} reads layer {a.KvSource}, which is not an earlier owner.");
            }
            var lowered = backend.Lower(ctx, site, a, cache);
            if (a.IsOwner) presents[layer] = (lowered.PresentKey!, lowered.PresentValue!);
            graph.ReplaceAllUses(site.Output, lowered.Output);
            progress?.Report((layer + 1, sites.Count));
        }

        // 2. Dead code: old attention cores, reader K/V projections, masks built for the old attention.
        var removed = graph.RemoveDeadCode();
        // Nothing alive may still read an old cache input by its old meaning (a position computed from
        // the cache length would be silently wrong once caches are rings). Reading the batch, head or
        // head-size axes is harmless: those are rewired to input_ids or folded to constants.
        RewireCacheShapeReads(ctx, sites, oldCacheInputs);
        // A second pass removes what the rewiring freed, and graph inputs nothing reads any more (e.g. an
        // attention mask only the old attention used); input_ids stays.
        removed = removed.Add(graph.RemoveDeadCode(pruneInputsExcept: new[] { ctx.InputIds }));

        // 3. Present outputs get their canonical names.
        foreach (var (owner, temp) in presents)
        {
            var site = sites[owner];
            var (_, presentAxis) = backend.CacheAxis(layout[owner]);
            foreach (var (tempName, canonical) in new[] { (temp.TempKey, $"present.{owner}.key"), (temp.TempValue, $"present.{owner}.value") })
            {
                // A surviving value of the source may already carry the canonical name (it was not the cache
                // output we removed): give it another name first.
                if (graph.Producer(canonical) is not null)
                    graph.RenameValue(canonical, graph.UniqueName(canonical + ".source"));
                graph.RenameValue(tempName, canonical);
                int presentType = StorageType(backend, ctx.QuantizationOf(owner)?.Format.ElementType ?? site.ElementType);
                graph.AddGraphOutput(ctx.IsPaged(owner)
                    ? GraphBuilder.TensorInfo(canonical, presentType, backend.PoolShape(site, ctx.PagedBlockSize!.Value))
                    : GraphBuilder.TensorInfo(canonical, presentType, ctx.BatchDim, (long)site.KvNumHeads, presentAxis, (long)site.HeadSize));
            }
        }

        graph.SortTopologically();
        EnsureOpset(graph.Proto, graph.Model.Proto, "com.microsoft", 1, onlyIfUsed: true);
        EnsureOpset(graph.Proto, graph.Model.Proto, OpSpec.Domain, 1, onlyIfUsed: true);

        var plan = new CachePlan
        {
            Backend = backend.Name,
            Layout = layout.ToCompactString(withWindows: true),
            LayoutName = layout.Name,
            LayerCount = sites.Count,
            KvSource = layout.Layers.Select(l => l.KvSource).ToArray(),
            Windows = layout.Layers.Select(l => l.Window).ToArray(),
            Caches = layout.Owners.Select(o => new CacheEntry
            {
                Owner = o,
                Window = layout[o].Window,
                Capacity = backend.Capacity(layout[o]),
                KvNumHeads = sites[o].KvNumHeads,
                HeadSize = sites[o].HeadSize,
                DType = ElementTypes.DTypeName(ctx.QuantizationOf(o)?.Format.ElementType ?? sites[o].ElementType),
                Scales = ctx.QuantizationOf(o) is { } q ? new KvScaleTensors(q.KeyScale, q.ValueScale, q.Format.Granularity) : null,
                Storage = ctx.QuantizationOf(o) is { } s && StorageType(backend, s.Format.ElementType) != s.Format.ElementType
                    ? ElementTypes.DTypeName(StorageType(backend, s.Format.ElementType)) : null,
                BlockSize = ctx.IsPaged(o) ? pagedBlockSize : null,
                PastKey = $"past_key_values.{o}.key",
                PastValue = $"past_key_values.{o}.value",
                PresentKey = $"present.{o}.key",
                PresentValue = $"present.{o}.value",
                Readers = layout.ReadersOf(o),
            }).ToArray(),
            InputIds = ctx.InputIds,
            PositionIds = graph.IsGraphInput("position_ids") ? "position_ids" : null,
            AttentionMask = graph.IsGraphInput("attention_mask") ? "attention_mask" : null,
            PastLengths = graph.IsGraphInput("past_lengths") ? "past_lengths" : null,
            NewLengths = graph.IsGraphInput("new_lengths") ? "new_lengths" : null,
            BlockTable = graph.IsGraphInput("block_table") ? "block_table" : null,
            Logits = graph.Proto.Output.FirstOrDefault(o => o.Name == "logits")?.Name ?? graph.Proto.Output[0].Name,
            ModelDType = ElementTypes.DTypeName(sites[0].ElementType),
            MaxPositions = MaxPositions(graph, sites),
        };
        plan.WriteTo(graph.Model.Proto);
        return new LoweringResult(plan, removed);
    }

    /// <summary>
    /// Rows of the rotary cos/sin tables the layers read (initializers <c>[max_positions, rotary_dim/2]</c>), the fewest
    /// over layers; null when no layer reads one (rotary computed from positions, or none).
    /// </summary>
    private static int? MaxPositions(ModelGraph graph, IReadOnlyList<AttentionSite> sites)
    {
        int? fewest = null;
        foreach (var site in sites)
            foreach (var table in new[] { site.Rotary.CosCache, site.Rotary.SinCache })
                if (table is not null && graph.Initializer(table) is { Dims.Count: 2 } t && t.Dims[0] is > 0 and <= int.MaxValue)
                    fewest = Math.Min(fewest ?? int.MaxValue, (int)t.Dims[0]);
        return fewest;
    }

    /// <summary>
    /// The element type the graph declares for a cache of <paramref name="cacheType"/>: fp8 caches of the ops backend are
    /// declared uint8 (the op's alias for E4M3FN bytes, docs/ops.md), because ORT's C# API cannot open a graph with
    /// float8e4m3fn inputs; GQA and the reference's Cast need the real type.
    /// </summary>
    private static int StorageType(ILoweringBackend backend, int cacheType) =>
        backend.Name == BackendName.Ops && cacheType == ElementTypes.Float8E4M3 ? (int)TensorProto.Types.DataType.Uint8 : cacheType;

    /// <summary>A float32 initializer of scales in the shape <paramref name="granularity"/> gives ([1], [1,Hkv,1,1], [1,Hkv,1,D]).</summary>
    private static string ScaleInitializer(ModelGraph graph, string stem, float[] scales, KvScaleGranularity granularity, AttentionSite site)
    {
        var t = new TensorProto { Name = graph.UniqueName(stem), DataType = (int)TensorProto.Types.DataType.Float };
        t.Dims.AddRange(KvScaleTensors.Shape(granularity, site.KvNumHeads, site.HeadSize));
        t.FloatData.AddRange(scales);
        graph.AddInitializer(t);
        return t.Name;
    }

    private static void RewireCacheShapeReads(LoweringContext ctx, IReadOnlyList<AttentionSite> sites, IReadOnlyList<string> oldCacheInputs)
    {
        var graph = ctx.Graph;
        foreach (var name in oldCacheInputs)
        {
            var site = sites.First(s => s.Cache is { } c && (c.PastKey == name || c.PastValue == name));
            foreach (var use in graph.Uses(name))
            {
                var node = use.Node;
                if (node.Name.StartsWith(ctx.Builder.Prefix + "/", StringComparison.Ordinal)) continue; // ours
                if (node.OpType == "Shape" && !site.Cache!.IsPacked)
                {
                    long start = node.Attribute.FirstOrDefault(a => a.Name == "start")?.I ?? 0;
                    long end = node.Attribute.FirstOrDefault(a => a.Name == "end")?.I ?? 4;
                    if (start < 0) start += 4;
                    if (end < 0) end += 4;
                    if (start == 0 && end == 1)
                    {
                        var batch = ctx.Shared("batch_shape", () => ctx.Builder.ShapeSlice("batch_from_input_ids", ctx.InputIds, 0, 1));
                        graph.ReplaceAllUses(node.Output[0], batch);
                        continue;
                    }
                    if (end - start == 1 && (start == 1 || start == 3))
                    {
                        var c = ctx.Builder.Int64s("cache_dim", new long[] { start == 1 ? site.KvNumHeads : site.HeadSize });
                        graph.ReplaceAllUses(node.Output[0], c);
                        continue;
                    }
                }
                throw new MixAttentionException($"after lowering, node '{ModelGraph.Describe(node)}' ({node.OpType}) still reads the cache input '{name}' " +
                    "in a way that depends on the cached length; this model derives something else from its cache and cannot be converted safely.");
            }
        }
    }

    private static void EnsureOpset(GraphProto graph, ModelProto model, string domain, long version, bool onlyIfUsed)
    {
        if (onlyIfUsed && !graph.Node.Any(n => n.Domain == domain)) return;
        if (!model.OpsetImport.Any(o => o.Domain == domain))
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = domain, Version = version });
    }
}
