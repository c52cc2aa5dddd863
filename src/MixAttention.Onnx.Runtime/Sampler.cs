namespace MixAttention.Onnx.Runtime;

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
