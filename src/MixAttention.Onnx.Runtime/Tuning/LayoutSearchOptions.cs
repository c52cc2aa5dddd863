using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Runtime.Tuning;

/// <summary>What <see cref="LayoutSearch"/> looks for: a KV budget, the windows it may use, how wide it searches.</summary>
public sealed record LayoutSearchOptions
{
    /// <summary>KV bytes per sequence at the context that the layout must fit in (set this or <see cref="BudgetRatio"/>).</summary>
    public long? BudgetBytes { get; init; }

    /// <summary>The budget as a share of the unconverted model's KV bytes at the context (every layer a full cache), in (0, 1].</summary>
    public double? BudgetRatio { get; init; }

    /// <summary>Windows a sliding layer may take. Null: the model's own windows (a model without any must be given some).</summary>
    public IReadOnlyList<int>? Windows { get; init; }

    /// <summary>Largest mean KL against the source the chosen layout may have (null: no limit).</summary>
    public double? MaxKl { get; init; }

    /// <summary>Search states kept per step.</summary>
    public int BeamWidth { get; init; } = 4;

    /// <summary>Layouts within the budget that are run end to end before one is chosen.</summary>
    public int Finalists { get; init; } = 3;

    /// <summary>A layer may read the cache of at most this many layers back (null: any earlier layer); bounds the pair measurements.</summary>
    public int? MaxShareDistance { get; init; } = 4;

    /// <summary>How the candidates run over the text (context, prefill chunk, decode steps, device).</summary>
    public EvaluationOptions Evaluation { get; init; } = new();

    /// <summary>Backend the candidates are lowered to.</summary>
    public string Backend { get; init; } = BackendName.Ops;

    internal void Validate()
    {
        if (BudgetBytes is null == BudgetRatio is null)
            throw new MixAttentionException("give the KV budget either in bytes or as a ratio of the unconverted model's KV (one of them).");
        if (BudgetBytes is < 1) throw new MixAttentionException($"the budget (--budget) must be >= 1 byte, got {BudgetBytes}.");
        if (BudgetRatio is { } r && !(r > 0 && r <= 1)) throw new MixAttentionException($"the budget ratio (--budget) must be in (0, 1], got {r}.");
        if (Windows is not null && Windows.Any(w => w < 1)) throw new MixAttentionException($"every window (--window) must be >= 1, got {string.Join(", ", Windows)}.");
        if (MaxKl is { } k && !(k >= 0)) throw new MixAttentionException($"the KL limit (--max-kl) must be a number >= 0, got {k}.");
        if (BeamWidth < 1) throw new MixAttentionException($"the beam width (--beam) must be >= 1, got {BeamWidth}.");
        if (Finalists < 1) throw new MixAttentionException($"the finalists (--finalists) must be >= 1, got {Finalists}.");
        if (MaxShareDistance is < 0) throw new MixAttentionException($"the share distance (--share-distance) must be >= 0, got {MaxShareDistance}.");
        ArgumentNullException.ThrowIfNull(Evaluation);
        Evaluation.Validate();
    }
}
