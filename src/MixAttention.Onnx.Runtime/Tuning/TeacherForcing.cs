namespace MixAttention.Onnx.Runtime.Tuning;

/// <summary>
/// Runs models teacher-forced over a text cut into sequences of <see cref="Context"/> tokens, as the runtime runs a
/// prompt: each sequence is prefilled in chunks of the prefill size from an empty cache, and its last tokens are fed
/// one decode step at a time. The reference model's raw logits are kept (positions × vocabulary floats) with each
/// position's log-sum-exp, so every other model is scored against them (KL from the log-probabilities, max |Δlogit|
/// from the logits) without running the reference again.
/// </summary>
internal sealed class TeacherForcing
{
    private readonly long[][] _sequences;
    private readonly EvaluationOptions _options;
    private float[][]? _referenceLogits; // [position][vocab]
    private double[]? _referenceLogSumExp; // [position]: log-probability = logit − this
    private int[]? _referenceTop;

    public TeacherForcing(IReadOnlyList<long> tokens, int context, EvaluationOptions options)
    {
        if (tokens.Count < 2) throw new MixAttentionException($"the text has {tokens.Count} token(s); scoring needs at least 2.");
        _options = options;
        Context = Math.Min(context, tokens.Count);
        var sequences = new List<long[]>();
        for (int start = 0; start + 1 < tokens.Count; start += Context)
        {
            int length = Math.Min(Context, tokens.Count - start);
            if (length < 2 || (sequences.Count > 0 && length < Context / 2)) break; // a short tail would only weigh early positions
            sequences.Add(Enumerable.Range(start, length).Select(i => tokens[i]).ToArray());
        }
        _sequences = sequences.ToArray();
        Positions = _sequences.Sum(s => s.Length - 1);
    }

    public int Context { get; }
    public int Sequences => _sequences.Length;
    public int Positions { get; }

    /// <summary>Runs the reference model and keeps its log-probabilities; returns its own scores (KL 0).</summary>
    public ModelEvaluation RunReference(MixAttentionModel model, string name, string? layout, IProgress<TuningProgress>? progress = null)
    {
        _referenceLogits = new float[Positions][];
        _referenceLogSumExp = new double[Positions];
        _referenceTop = new int[Positions];
        return Score(model, name, layout, keep: true, progress);
    }

    /// <summary>Runs <paramref name="model"/> and scores it against the reference.</summary>
    public ModelEvaluation Run(MixAttentionModel model, string name, string? layout, IProgress<TuningProgress>? progress = null)
    {
        if (_referenceLogits is null) throw new InvalidOperationException("run the reference first");
        return Score(model, name, layout, keep: false, progress);
    }

    private ModelEvaluation Score(MixAttentionModel model, string name, string? layout, bool keep, IProgress<TuningProgress>? progress)
    {
        var config = new SessionConfig { MaxBatch = 1, MaxLength = Context, PrefillChunk = Math.Min(_options.PrefillChunk, Context) };
        using var session = model.CreateSession(config);
        var nll = new double[Positions];
        var kl = new double[Positions];
        var logitDelta = new double[Positions];
        var agree = new bool[Positions];
        int position = 0;
        for (int q = 0; q < _sequences.Length; q++)
        {
            progress?.Report(new TuningProgress($"running {Short(name)}", q, _sequences.Length));
            var tokens = _sequences[q];
            int decode = Math.Min(_options.DecodeTokens, tokens.Length - 2);
            int prefill = tokens.Length - 1 - decode; // the last token predicts nothing: it is never fed
            int seq = session.AddSequence();
            var rows = new List<ReadOnlyMemory<float>>(tokens.Length - 1);
            var all = session.Prefill(seq, tokens.AsSpan(0, prefill), allPositions: true);
            int vocab = all.Length / prefill;
            if (!keep && _referenceLogits![position].Length != vocab)
                throw new MixAttentionException($"{name} has a vocabulary of {vocab} but the source has {_referenceLogits[position].Length}; compare conversions of the same model.");
            for (int t = 0; t < prefill; t++) rows.Add(all.AsMemory(t * vocab, vocab));
            for (int t = prefill; t < prefill + decode; t++)
                rows.Add(session.Decode(new[] { seq }, new[] { tokens[t] })[0]);
            session.RemoveSequence(seq);
            // Scoring a row is a pass over the vocabulary (a log-softmax and, against the reference, a KL): the positions of
            // a sequence are scored in parallel, each thread with its own scratch row.
            int first = position;
            if (tokens.Skip(1).FirstOrDefault(id => id >= vocab) is var outside and > 0)
                throw new MixAttentionException($"token id {outside} is outside the model's vocabulary [0, {vocab}).");
            Parallel.For(0, rows.Count, () => new double[vocab], (t, _, scratch) =>
            {
                Take(rows[t].Span, tokens[t + 1], first + t, scratch);
                return scratch;
            }, _ => { });
            position += rows.Count;
        }
        progress?.Report(new TuningProgress($"running {Short(name)}", _sequences.Length, _sequences.Length));

        void Take(ReadOnlySpan<float> logits, long next, int p, double[] logProbs)
        {
            double logSumExp = LogSoftmax(logits, logProbs);
            nll[p] = -logProbs[next];
            int top = Sampler.ArgMax(logits); // log-softmax keeps the order of the logits
            if (keep)
            {
                _referenceLogits![p] = logits.ToArray();
                _referenceLogSumExp![p] = logSumExp;
                _referenceTop![p] = top;
                agree[p] = true;
                return;
            }
            var reference = _referenceLogits![p];
            double referenceLogSumExp = _referenceLogSumExp![p];
            double sum = 0, delta = 0;
            for (int i = 0; i < reference.Length; i++)
            {
                // The reference's log-probability is computed exactly as LogSoftmax computes the model's: equal logits give 0.
                double lp = reference[i] - referenceLogSumExp;
                sum += Math.Exp(lp) * (lp - logProbs[i]);
                double d = Math.Abs(logits[i] - (double)reference[i]);
                if (!(d <= delta)) delta = d; // a NaN logit is reported as NaN, not skipped
            }
            kl[p] = Math.Max(0, sum);
            logitDelta[p] = delta;
            agree[p] = top == _referenceTop![p];
        }

        long kvBytes = session.Memory().BytesPerSequence;
        return Summarize(name, layout, nll, kl, logitDelta, agree, kvBytes);
    }

    private ModelEvaluation Summarize(string name, string? layout, double[] nll, double[] kl, double[] logitDelta, bool[] agree, long kvBytes)
    {
        // Positions are laid out sequence after sequence; the position within its sequence decides the bucket.
        int width = Math.Max(1, (Context - 1 + _options.Buckets - 1) / _options.Buckets);
        int buckets = (Context - 1 + width - 1) / width;
        var n = new int[buckets];
        var sNll = new double[buckets];
        var sKl = new double[buckets];
        var mKl = new double[buckets];
        var mDelta = new double[buckets];
        var sAgree = new int[buckets];
        int p = 0;
        foreach (var s in _sequences)
            for (int t = 0; t < s.Length - 1; t++, p++)
            {
                int b = t / width;
                n[b]++; sNll[b] += nll[p]; sKl[b] += kl[p]; mKl[b] = Math.Max(mKl[b], kl[p]); mDelta[b] = Math.Max(mDelta[b], logitDelta[p]);
                if (agree[p]) sAgree[b]++;
            }
        var list = new List<PositionBucket>();
        for (int b = 0; b < buckets; b++)
            if (n[b] > 0)
                list.Add(new PositionBucket(b * width, Math.Min(Context - 1, (b + 1) * width), n[b], Math.Exp(sNll[b] / n[b]), sKl[b] / n[b], mKl[b], mDelta[b], (double)sAgree[b] / n[b]));
        return new ModelEvaluation(name, layout, Math.Exp(nll.Average()), kl.Average(), MaxOf(kl), MaxOf(logitDelta), (double)agree.Count(a => a) / agree.Length, kvBytes, list);
    }

    /// <summary>The largest value; NaN when any is NaN (Enumerable.Max skips NaN, which would hide a broken model).</summary>
    private static double MaxOf(double[] values)
    {
        double max = double.NegativeInfinity;
        foreach (var v in values) max = Math.Max(max, v);
        return max;
    }

    /// <summary>A model path as progress shows it: its folder and file name.</summary>
    private static string Short(string name) =>
        name.Contains('/') ? Path.Combine(Path.GetFileName(Path.GetDirectoryName(name)) ?? "", Path.GetFileName(name)) : name;

    /// <summary>Writes log-softmax(<paramref name="logits"/>) to <paramref name="output"/>; returns the log-sum-exp subtracted.</summary>
    private static double LogSoftmax(ReadOnlySpan<float> logits, double[] output)
    {
        double max = double.NegativeInfinity;
        foreach (var v in logits) max = Math.Max(max, v);
        double z = 0;
        foreach (var v in logits) z += Math.Exp(v - max);
        double log = Math.Log(z) + max;
        for (int i = 0; i < logits.Length; i++) output[i] = logits[i] - log;
        return log;
    }
}
