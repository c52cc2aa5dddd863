namespace MixAttention.Onnx.Runtime;

/// <summary>
/// The check <c>mixattn convert</c> makes before it reports success: the converted model must load in ONNX Runtime
/// (with the op library) and run; where the source runs too and both fit in memory, a short teacher-forced decode
/// past every window compares the two. A converted model that cannot load or run is an error (the caller removes it).
/// </summary>
public static class ConversionCheck
{
    /// <summary>Runs the check.</summary>
    /// <exception cref="InvalidOperationException">The converted model does not load or run.</exception>
    public static ConversionCheckReport Run(string source, string converted, ConversionCheckMode mode, ModelOptions? options = null)
    {
        if (mode == ConversionCheckMode.None)
            return new ConversionCheckReport(ConversionCheckMode.None, "not asked for", 0, null, 0);
        var written = Structure(converted);
        string why = $"asked for ({mode.ToString().ToLowerInvariant()})";
        if (mode == ConversionCheckMode.Auto)
        {
            // Running a model holds its weights (about twice, with ORT's copies); a check may take a quarter of what is free.
            long available = AvailableMemory.HostBytes();
            long load = 2 * ModelBytes(written), compare = load + 2 * ModelBytes(source);
            mode = compare <= available / 4 ? ConversionCheckMode.Compare : load <= available / 4 ? ConversionCheckMode.Load : ConversionCheckMode.Structure;
            why = mode switch
            {
                ConversionCheckMode.Compare => "both models fit in memory",
                ConversionCheckMode.Load => $"comparing with the source needs about {compare >> 20} MiB, over a quarter of the {available >> 20} MiB available",
                _ => $"running the converted model needs about {load >> 20} MiB, over a quarter of the {available >> 20} MiB available: graph and plan checked only",
            };
        }
        var plan = mode == ConversionCheckMode.Structure ? null : MixAttention.Onnx.Plan.CachePlan.FromModel(written.Proto);
        if (plan is not null && plan.Caches.Any(c => MixAttention.Onnx.Plan.ElementTypes.FromDTypeName(c.StorageDType) == MixAttention.Onnx.Plan.ElementTypes.Float8E4M3))
            (mode, why) = (ConversionCheckMode.Structure, "fp8 caches: ONNX Runtime's C# API cannot open models with float8e4m3fn inputs, so graph and plan were checked only");
        else if (plan is { BlockTable: not null, TokenMajorPools: true } && (options?.Device ?? ExecutionDevice.Cpu) != ExecutionDevice.Cuda)
            (mode, why) = (ConversionCheckMode.Structure, "ORT's PagedAttention (ort-gqa --paged) runs on CUDA only, so graph and plan were checked only");
        if (mode == ConversionCheckMode.Structure)
            return new ConversionCheckReport(ConversionCheckMode.Structure, why, 0, null, 0);

        LoadAndStep(converted, options);
        if (mode == ConversionCheckMode.Load)
            return new ConversionCheckReport(ConversionCheckMode.Load, why, 0, null, 0);

        var verify = new VerifyOptions { PromptLength = 5, PrefillChunk = 8, Batch = 1, Tolerance = 1e-3f, Model = options ?? new ModelOptions() };
        try
        {
            var report = ModelComparison.Verify(source, converted, verify);
            return new ConversionCheckReport(ConversionCheckMode.Compare, why, verify.PromptLength + report.Steps.Count - 1, report.MaxAbsDiff, verify.Tolerance);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // The converted model ran above; the source may not (an export that only runs at its traced shapes).
            return new ConversionCheckReport(ConversionCheckMode.Load, $"the source could not be run for a comparison ({FirstLine(e.Message)})", 0, null, verify.Tolerance);
        }
    }

    /// <summary>The cheap check, always made: the written graph is whole and its cache plan matches it. Returns the graph read.</summary>
    private static Onnx.OnnxModel Structure(string converted)
    {
        try
        {
            var model = Onnx.OnnxModel.Load(converted);
            var graph = model.Proto.Graph;
            var defined = new HashSet<string>(graph.Input.Select(i => i.Name).Concat(graph.Initializer.Select(t => t.Name)), StringComparer.Ordinal);
            foreach (var node in graph.Node)
            {
                foreach (var input in node.Input)
                    if (input.Length > 0 && !defined.Contains(input))
                        throw new InvalidOperationException($"node '{node.Name}' reads '{input}', which nothing before it defines");
                foreach (var output in node.Output) defined.Add(output);
            }
            foreach (var output in graph.Output)
                if (!defined.Contains(output.Name)) throw new InvalidOperationException($"graph output '{output.Name}' is not computed");
            var plan = MixAttention.Onnx.Plan.CachePlan.FromModel(model.Proto) ?? throw new InvalidOperationException("it has no cache plan");
            var inputs = graph.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
            var outputs = graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
            var initializers = graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
            foreach (var c in plan.Caches)
            {
                if (!inputs.Contains(c.PastKey) || !inputs.Contains(c.PastValue) || !outputs.Contains(c.PresentKey) || !outputs.Contains(c.PresentValue))
                    throw new InvalidOperationException($"the cache plan names cache tensors of layer {c.Owner} that the graph does not have");
                if (c.Scales is { } scales)
                    foreach (var name in new[] { scales.Key, scales.Value })
                        if (!initializers.TryGetValue(name, out var t) || t.DataType != MixAttention.Onnx.Plan.ElementTypes.Float
                            || !t.Dims.SequenceEqual(MixAttention.Onnx.Plan.KvScaleTensors.Shape(scales.Granularity, c.KvNumHeads, c.HeadSize)))
                            throw new InvalidOperationException($"the scales '{name}' of layer {c.Owner}'s cache are not a float32 initializer of the plan's shape");
            }
            return model;
        }
        catch (Exception e) when (e is not OutOfMemoryException and not InvalidOperationException)
        {
            throw new InvalidOperationException($"the converted model does not read back: {FirstLine(e.Message)}", e);
        }
        catch (InvalidOperationException e)
        {
            throw new InvalidOperationException($"the converted model is not whole: {e.Message}", e);
        }
    }

    private static void LoadAndStep(string converted, ModelOptions? options)
    {
        try
        {
            using var model = MixAttentionModel.Open(converted, options);
            using var session = model.CreateSession(new SessionConfig { MaxBatch = 1, MaxLength = 8, PrefillChunk = 4 });
            var logits = session.Prefill(session.AddSequence(), new long[] { 1, 2, 3 });
            if (logits.Length == 0 || !logits.All(float.IsFinite))
                throw new InvalidOperationException("its first step gave no finite logits");
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidOperationException($"the converted model does not run in ONNX Runtime: {FirstLine(e.Message)}", e);
        }
    }

    /// <summary>The model file plus the external data files its tensors name (weights are not read).</summary>
    private static long ModelBytes(Onnx.OnnxModel model) =>
        new FileInfo(model.SourcePath!).Length
        + model.ExternalTensors().Select(t => model.ResolveExternalPath(t.Ref, t.Tensor.Name, allowOutside: true)).Distinct()
            .Sum(path => new FileInfo(path) is { Exists: true } f ? f.Length : 0);

    private static long ModelBytes(string path)
    {
        try
        {
            return ModelBytes(Onnx.OnnxModel.Load(path, new Onnx.OnnxLoadOptions { AllowExternalDataOutsideModelFolder = true, ValidateExternalData = false }));
        }
        catch (Exception e) when (e is MixAttentionException or IOException)
        {
            return new FileInfo(path) is { Exists: true } f ? f.Length : 0;
        }
    }

    private static string FirstLine(string s) => s.Split('\n', 2)[0].Trim();
}
