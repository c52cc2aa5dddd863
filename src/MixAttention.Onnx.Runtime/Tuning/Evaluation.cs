namespace MixAttention.Onnx.Runtime.Tuning;

/// <summary>
/// Quality of converted models on real text (<c>mixattn eval</c>): the source and each conversion run teacher-forced
/// over the same tokens (prefill in chunks, then decode steps, as the runtime runs them), scored by perplexity, KL
/// against the source, top-1 agreement (overall and by position) and KV bytes per sequence.
/// </summary>
public static class Evaluation
{
    /// <summary>Runs <paramref name="source"/> and every model of <paramref name="converted"/> over <paramref name="tokens"/>.</summary>
    public static EvaluationReport Run(string source, IReadOnlyList<string> converted, IReadOnlyList<long> tokens,
        EvaluationOptions? options = null, IProgress<TuningProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(converted);
        ArgumentNullException.ThrowIfNull(tokens);
        options ??= new EvaluationOptions();
        options.Validate();
        var models = new List<MixAttentionModel>();
        try
        {
            foreach (var path in converted.Prepend(source)) models.Add(MixAttentionModel.Open(path, options.Model));
            int window = models.Select(m => m.Plan?.Windows.DefaultIfEmpty(0).Max() ?? 0).DefaultIfEmpty(0).Max();
            var run = new TeacherForcing(tokens, options.Context ?? DefaultContext(window, tokens.Count), options);
            var results = new List<ModelEvaluation> { run.RunReference(models[0], source, models[0].Plan is { } own ? LayoutOf(own) : null, progress) };
            for (int i = 1; i < models.Count; i++)
                results.Add(run.Run(models[i], converted[i - 1], models[i].Plan is { } plan ? LayoutOf(plan) : null, progress));
            return new EvaluationReport(run.Context, run.Sequences, run.Positions, results);
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }

    /// <summary>Four windows (every sliding layer past its window for most of the sequence), at least 64 tokens, at most the text.</summary>
    internal static int DefaultContext(int largestWindow, int tokens) => Math.Min(tokens, Math.Max(64, 4 * largestWindow));

    private static string LayoutOf(Plan.CachePlan plan) =>
        string.Join('_', Enumerable.Range(0, plan.LayerCount).Select(l => plan.Windows[l] > 0 ? $"{plan.KvSource[l]}s{plan.Windows[l]}" : $"{plan.KvSource[l]}"));
}
