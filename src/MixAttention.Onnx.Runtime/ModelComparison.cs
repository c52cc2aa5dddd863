namespace MixAttention.Onnx.Runtime;

/// <summary>Runs an unconverted model and its conversion on the same input and compares them.</summary>
public static class ModelComparison
{
    /// <summary>
    /// Teacher-forced comparison: both models read the same random tokens (prompt, then decode steps) and the logits
    /// of every step are compared.
    /// </summary>
    public static VerifyReport Verify(string original, string converted, VerifyOptions? options = null)
    {
        options ??= new VerifyOptions();
        if (options.Steps is < 0) throw new MixAttentionException($"the decode steps (--steps) must be >= 0, got {options.Steps}.");
        if (options.PromptLength < 1) throw new MixAttentionException($"the prompt length (--prompt-len) must be >= 1, got {options.PromptLength}.");
        if (options.Batch < 1) throw new MixAttentionException($"the batch (--batch) must be >= 1, got {options.Batch}.");
        if (options.PrefillChunk < 1) throw new MixAttentionException($"the prefill chunk must be >= 1, got {options.PrefillChunk}.");
        if (!(options.Tolerance >= 0)) throw new MixAttentionException($"the tolerance (--tolerance) must be a number >= 0, got {options.Tolerance}.");
        using var a = MixAttentionModel.Open(original, options.Model);
        using var b = MixAttentionModel.Open(converted, options.ConvertedModel ?? options.Model);
        int window = b.Plan?.Windows.DefaultIfEmpty(0).Max() ?? 0;
        long stepsWanted = options.Steps ?? Math.Max(3L * window, 32);
        long lengthWanted = options.PromptLength + stepsWanted;
        int vocab = Math.Min(a.VocabSize > 0 ? a.VocabSize : 256, b.VocabSize > 0 ? b.VocabSize : 256);
        // Up front, before any token or logit array: both models' logits of every step ((steps + 1) × batch × vocab
        // floats each) and the tokens must fit in the memory available now (a --batch of 2,000,000,000 is refused here).
        Int128 need = (Int128)2 * (stepsWanted + 1) * options.Batch * vocab * sizeof(float) + (Int128)options.Batch * lengthWanted * sizeof(long);
        long available = AvailableMemory.HostBytes();
        if (lengthWanted > int.MaxValue / 2 || need > available / 2)
            throw new MixAttentionException($"verifying {options.Batch:N0} sequences of {lengthWanted:N0} tokens (vocabulary {vocab:N0}) would keep {need:N0} bytes of logits and tokens; {available:N0} bytes are available. Lower --batch or --steps.");
        int steps = (int)stepsWanted;
        int length = (int)lengthWanted;
        var rng = new Random(options.Seed);
        var tokens = Enumerable.Range(0, options.Batch).Select(_ => Enumerable.Range(0, length).Select(_ => (long)rng.Next(0, vocab)).ToArray()).ToArray();
        var config = new SessionConfig { MaxBatch = options.Batch, MaxLength = length, PrefillChunk = options.PrefillChunk };
        var la = Logits(a, config, tokens, options.PromptLength, out var ma);
        var lb = Logits(b, config, tokens, options.PromptLength, out var mb);
        var result = new List<StepComparison>();
        for (int s = 0; s <= steps; s++)
        {
            float maxDiff = 0;
            double maxKl = 0;
            int agree = 0;
            for (int q = 0; q < options.Batch; q++)
            {
                var x = la[s][q];
                var y = lb[s][q];
                for (int i = 0; i < x.Length; i++) maxDiff = Math.Max(maxDiff, float.IsNaN(x[i] - y[i]) ? float.PositiveInfinity : Math.Abs(x[i] - y[i]));
                maxKl = Math.Max(maxKl, Kl(x, y));
                if (Sampler.ArgMax(x) == Sampler.ArgMax(y)) agree++;
            }
            result.Add(new StepComparison(s, options.PromptLength - 1 + s, maxDiff, maxKl, (double)agree / options.Batch));
        }
        return new VerifyReport(result, ma, mb, window, options.Tolerance);
    }

    /// <summary>Logits [step][sequence][vocab]: step 0 = the prompt's last token, then one per decode step.</summary>
    private static float[][][] Logits(MixAttentionModel model, SessionConfig config, long[][] tokens, int prompt, out SessionKvMemory memory)
    {
        using var session = model.CreateSession(config);
        int batch = tokens.Length, steps = tokens[0].Length - prompt;
        var seqs = new int[batch];
        var result = new float[steps + 1][][];
        result[0] = new float[batch][];
        for (int q = 0; q < batch; q++)
        {
            seqs[q] = session.AddSequence();
            result[0][q] = session.Prefill(seqs[q], tokens[q].AsSpan(0, prompt));
        }
        for (int s = 1; s <= steps; s++)
            result[s] = session.Decode(seqs, tokens.Select(t => t[prompt + s - 1]).ToArray());
        memory = session.Memory();
        return result;
    }

    private static double Kl(float[] p, float[] q)
    {
        double mp = p.Max(), mq = q.Max(), zp = 0, zq = 0;
        for (int i = 0; i < p.Length; i++) { zp += Math.Exp(p[i] - mp); zq += Math.Exp(q[i] - mq); }
        double lzp = Math.Log(zp) + mp, lzq = Math.Log(zq) + mq, kl = 0;
        for (int i = 0; i < p.Length; i++)
        {
            double lp = p[i] - lzp, lq = q[i] - lzq;
            kl += Math.Exp(lp) * (lp - lq);
        }
        return Math.Max(0, kl);
    }

    /// <summary>Generates from the same prompt with both models (greedy unless the options say otherwise).</summary>
    public static GenerationComparison Generate(string original, string converted, IReadOnlyList<long> prompt, GenerationOptions generation, SessionConfig config, ModelOptions? modelOptions = null)
    {
        (IReadOnlyList<long>, GenerationStats, SessionKvMemory) Run(string path)
        {
            using var model = MixAttentionModel.Open(path, modelOptions);
            using var session = model.CreateSession(config);
            var generator = new ContinuousBatchingGenerator(session);
            var result = generator.Run(new[] { new GenerationRequest(prompt, generation) })[0];
            return (result.Tokens, generator.LastStats!, session.Memory());
        }
        var (ta, sa, ma) = Run(original);
        var (tb, sb, mb) = Run(converted);
        return new GenerationComparison(ta, tb, sa, sb, ma, mb);
    }
}
