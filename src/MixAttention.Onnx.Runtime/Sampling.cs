namespace MixAttention.Onnx.Runtime;

/// <summary>How tokens are chosen and when generation stops.</summary>
public sealed record GenerationOptions
{
    /// <summary>Tokens to generate at most.</summary>
    public int MaxNewTokens { get; init; } = 64;
    /// <summary>0 = greedy (argmax); otherwise logits are divided by it before sampling.</summary>
    public float Temperature { get; init; }
    /// <summary>Keep the k most likely tokens (0 = all).</summary>
    public int TopK { get; init; }
    /// <summary>Keep the smallest set of tokens whose probability reaches p (1 = all).</summary>
    public float TopP { get; init; } = 1f;
    /// <summary>HF-style repetition penalty over prompt and generated tokens (1 = none).</summary>
    public float RepetitionPenalty { get; init; } = 1f;
    /// <summary>Generation stops after any of these tokens (the stop token is reported).</summary>
    public IReadOnlyCollection<long> StopTokens { get; init; } = Array.Empty<long>();
    /// <summary>Seed of the sampler (null = random).</summary>
    public int? Seed { get; init; }

    internal void Validate()
    {
        if (MaxNewTokens < 1) throw new MixAttentionException($"MaxNewTokens must be >= 1, got {MaxNewTokens}.");
        if (!(Temperature >= 0) || float.IsInfinity(Temperature)) throw new MixAttentionException($"Temperature must be a finite number >= 0, got {Temperature}.");
        if (TopK < 0) throw new MixAttentionException($"TopK must be >= 0, got {TopK}.");
        if (!(TopP > 0 && TopP <= 1)) throw new MixAttentionException($"TopP must be in (0, 1], got {TopP}.");
        if (!(RepetitionPenalty > 0) || float.IsInfinity(RepetitionPenalty)) throw new MixAttentionException($"RepetitionPenalty must be a finite number > 0, got {RepetitionPenalty}.");
    }
}

/// <summary>Chooses the next token from a logits row: repetition penalty, then greedy or temperature / top-k / top-p sampling.</summary>
public sealed class Sampler
{
    private readonly GenerationOptions _options;
    private readonly Random _random;

    /// <summary>Creates a sampler with its own random stream.</summary>
    public Sampler(GenerationOptions options)
    {
        options.Validate();
        _options = options;
        _random = options.Seed is { } s ? new Random(s) : new Random();
    }

    /// <summary>The next token. <paramref name="logits"/> is modified (penalty, temperature).</summary>
    public long Next(float[] logits, IReadOnlyCollection<long> history)
    {
        if (_options.RepetitionPenalty != 1f)
            foreach (var t in history.Distinct())
                if (t >= 0 && t < logits.Length)
                    logits[t] = logits[t] > 0 ? logits[t] / _options.RepetitionPenalty : logits[t] * _options.RepetitionPenalty;
        if (_options.Temperature == 0) return ArgMax(logits);

        var order = Enumerable.Range(0, logits.Length).OrderByDescending(i => logits[i]).ToArray();
        int keep = _options.TopK > 0 ? Math.Min(_options.TopK, order.Length) : order.Length;
        double max = logits[order[0]];
        var probs = new double[keep];
        double sum = 0;
        for (int i = 0; i < keep; i++) sum += probs[i] = Math.Exp((logits[order[i]] - max) / _options.Temperature);
        if (_options.TopP < 1f)
        {
            double cumulative = 0;
            for (int i = 0; i < keep; i++)
            {
                cumulative += probs[i] / sum;
                if (cumulative >= _options.TopP) { keep = i + 1; break; }
            }
            sum = probs.Take(keep).Sum();
        }
        double u = _random.NextDouble() * sum;
        for (int i = 0; i < keep; i++)
        {
            u -= probs[i];
            if (u <= 0) return order[i];
        }
        return order[keep - 1];
    }

    /// <summary>Index of the largest value (the first on ties).</summary>
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }
}
