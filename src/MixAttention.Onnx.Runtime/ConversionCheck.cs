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
        string why = mode == ConversionCheckMode.Compare ? "asked for" : "asked for a load check only";
        if (mode == ConversionCheckMode.Auto)
        {
            long need = 2 * (ModelBytes(source) + ModelBytes(converted));
            long available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
            mode = need <= available / 2 ? ConversionCheckMode.Compare : ConversionCheckMode.Load;
            why = mode == ConversionCheckMode.Compare
                ? "both models fit in memory"
                : $"comparing with the source needs about {need >> 20} MiB, more than half of the {available >> 20} MiB available: loaded and ran one step only";
        }

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
