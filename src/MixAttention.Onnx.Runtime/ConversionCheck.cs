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
        Structure(converted);
        string why = $"asked for ({mode.ToString().ToLowerInvariant()})";
        if (mode == ConversionCheckMode.Auto)
        {
            // Running a model holds its weights (about twice, with ORT's copies); a check may take a quarter of what is free.
            long budget = AvailableBytes() / 4;
            long compare = 2 * (ModelBytes(source) + ModelBytes(converted)), load = 2 * ModelBytes(converted);
            mode = compare <= budget ? ConversionCheckMode.Compare : load <= budget ? ConversionCheckMode.Load : ConversionCheckMode.Structure;
            why = mode switch
            {
                ConversionCheckMode.Compare => "both models fit in memory",
                ConversionCheckMode.Load => $"comparing with the source needs about {compare >> 20} MiB, over a quarter of the {AvailableBytes() >> 20} MiB available",
                _ => $"running the converted model needs about {load >> 20} MiB, over a quarter of the {AvailableBytes() >> 20} MiB available: graph and plan checked only",
            };
        }
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

    /// <summary>The cheap check, always made: the written graph is whole and its cache plan matches it.</summary>
    private static void Structure(string converted)
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
            foreach (var c in plan.Caches)
                if (!inputs.Contains(c.PastKey) || !inputs.Contains(c.PastValue) || !outputs.Contains(c.PresentKey) || !outputs.Contains(c.PresentValue))
                    throw new InvalidOperationException($"the cache plan names cache tensors of layer {c.Owner} that the graph does not have");
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

    private static long AvailableBytes()
    {
        // MemAvailable where the kernel reports it (what can be had without swapping), else what the GC sees.
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal)
                    && long.TryParse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], out var kb))
                    return Math.Min(kb * 1024, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
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

    /// <summary>The model file plus the external data files beside it that it names (an estimate: every *.data file with its stem).</summary>
    private static long ModelBytes(string path)
    {
        var file = new FileInfo(path);
        long bytes = file.Exists ? file.Length : 0;
        var dir = file.Directory;
        if (dir is null) return bytes;
        foreach (var data in dir.EnumerateFiles(Path.GetFileNameWithoutExtension(path) + "*.data"))
            bytes += data.Length;
        return bytes;
    }

    private static string FirstLine(string s) => s.Split('\n', 2)[0].Trim();
}
