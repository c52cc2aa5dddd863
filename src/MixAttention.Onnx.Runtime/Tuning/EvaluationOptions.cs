namespace MixAttention.Onnx.Runtime.Tuning;

/// <summary>How <see cref="Evaluation"/> and <see cref="LayoutSearch"/> run models over the text.</summary>
public sealed record EvaluationOptions
{
    /// <summary>
    /// Tokens per sequence: the text is cut into sequences of this length, each run from an empty cache. Null: four
    /// times the largest window of the models (at least 64), at most the text.
    /// </summary>
    public int? Context { get; init; }

    /// <summary>Tokens per prefill call, as the runtime chunks a prompt.</summary>
    public int PrefillChunk { get; init; } = 64;

    /// <summary>The last tokens of each sequence are fed one decode step at a time (the rest is prefilled).</summary>
    public int DecodeTokens { get; init; } = 8;

    /// <summary>Position buckets of the per-position report.</summary>
    public int Buckets { get; init; } = 8;

    /// <summary>How the models are opened (device, threads).</summary>
    public ModelOptions? Model { get; init; }

    internal void Validate()
    {
        if (Context is < 2) throw new MixAttentionException($"the context (--context) must be >= 2 tokens, got {Context}.");
        if (PrefillChunk < 1) throw new MixAttentionException($"the prefill chunk (--prefill-chunk) must be >= 1, got {PrefillChunk}.");
        if (DecodeTokens < 0) throw new MixAttentionException($"the decode tokens (--decode-tokens) must be >= 0, got {DecodeTokens}.");
        if (Buckets < 1) throw new MixAttentionException($"the position buckets (--buckets) must be >= 1, got {Buckets}.");
    }
}
