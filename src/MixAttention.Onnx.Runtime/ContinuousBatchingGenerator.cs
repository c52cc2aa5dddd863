using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// Generates from prompts on a decoding session. <see cref="Run"/> does continuous batching: requests wait for a
/// free slot, are prefilled alone (chunked), then decode together, one batched call per step; a finished sequence
/// leaves at once and its slot takes the next request. <see cref="GenerateAsync"/> streams one prompt.
/// <para>
/// Owns nothing (not disposable): it drives a session the caller owns, so a disposed session makes its calls fail
/// with the session's <see cref="ObjectDisposedException"/>. Like the session, one run at a time.
/// </para>
/// </summary>
public sealed class ContinuousBatchingGenerator
{
    /// <summary>Uses <paramref name="session"/> (not owned).</summary>
    public ContinuousBatchingGenerator(IDecoderSession session)
    {
        ArgumentNullException.ThrowIfNull(session);
        Session = session;
    }

    /// <summary>The session.</summary>
    public IDecoderSession Session { get; }

    /// <summary>Statistics of the last <see cref="Run"/>.</summary>
    public GenerationStats? LastStats { get; private set; }

    /// <summary>Streams the tokens generated for one prompt.</summary>
    public async IAsyncEnumerable<long> GenerateAsync(IReadOnlyList<long> prompt, GenerationOptions options, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(options);
        if (prompt.Count == 0) throw new MixAttentionException("the prompt is empty; generation needs at least one prompt token.");
        var sampler = new Sampler(options);
        var history = new List<long>(prompt);
        int seq = Session.AddSequence();
        try
        {
            var logits = Session.Prefill(seq, prompt.ToArray());
            for (int n = 0; ; n++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                long token = sampler.Next(logits, history);
                history.Add(token);
                yield return token;
                if (options.StopTokens.Contains(token) || n + 1 >= options.MaxNewTokens || Session.Length(seq) >= Session.Config.MaxLength) yield break;
                await Task.Yield();
                logits = Session.Decode(new[] { seq }, new[] { token })[0];
            }
        }
        finally
        {
            RemoveQuietly(seq);
        }
    }

    /// <summary>Removes a sequence on the way out of a run, unless the session is already gone (the error that ended the run stands).</summary>
    private void RemoveQuietly(int sequence)
    {
        try
        {
            if (Session.Sequences.Contains(sequence)) Session.RemoveSequence(sequence);
        }
        catch (ObjectDisposedException)
        {
        }
        catch (InvalidOperationException)
        {
            // Another thread is using the session: it is not ours to clean up.
        }
    }

    /// <summary>
    /// Completes every request with continuous batching, calling <paramref name="onToken"/> for each token as it is
    /// produced. Results are in request order.
    /// </summary>
    public IReadOnlyList<GenerationResult> Run(IReadOnlyList<GenerationRequest> requests, Action<GeneratedToken>? onToken = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(requests);
        // Every request is checked before the first runs: a bad one fails the run at once, not after the others' work.
        for (int r = 0; r < requests.Count; r++)
        {
            var req = requests[r] ?? throw new ArgumentException($"request {r} is null.", nameof(requests));
            if (req.Prompt is null || req.Prompt.Count == 0) throw new MixAttentionException($"request {r} has an empty prompt; generation needs at least one prompt token.");
            ArgumentNullException.ThrowIfNull(req.Options, $"requests[{r}].Options");
            req.Options.Validate();
        }
        var pending = new Queue<int>(Enumerable.Range(0, requests.Count));
        var active = new List<Active>();
        var results = new GenerationResult?[requests.Count];
        var prefillWatch = new Stopwatch();
        var decodeWatch = new Stopwatch();
        int steps = 0, promptTokens = 0, generated = 0;

        bool Emit(Active a, long token)
        {
            a.Tokens.Add(token);
            a.History.Add(token);
            generated++;
            var options = requests[a.Request].Options;
            FinishReason? finish = options.StopTokens.Contains(token) ? FinishReason.Stop
                : a.Tokens.Count >= options.MaxNewTokens || Session.Length(a.Sequence) >= Session.Config.MaxLength ? FinishReason.Length : null;
            onToken?.Invoke(new GeneratedToken(a.Request, token, a.Tokens.Count - 1, finish));
            if (finish is { } f)
            {
                results[a.Request] = new GenerationResult(a.Request, a.Tokens, f, a.PrefillTime, a.DecodeTime);
                Session.RemoveSequence(a.Sequence);
                return true;
            }
            return false;
        }

        // Paged caches: admit a request only while the free blocks cover its prompt and one more block (its first decode
        // steps), so admissions do not starve the running sequences. An idle session that still cannot take it never will.
        bool Admits(int promptLength, bool idle, int request)
        {
            if (Session is not InPlaceCacheSession { Caches: { BlockSize: not null } caches }) return true;
            int need = caches.BlocksFor(promptLength) + 1;
            if (need <= caches.FreeBlocks) return true;
            if (idle)
                throw new MixAttentionException($"request {request}: its prompt of {promptLength} tokens needs {need} KV blocks (with one to grow into) but the session's paged caches have {caches.FreeBlocks} free of {caches.TotalBlocks}; open the session with a larger SessionConfig.KvBlocks.");
            return false;
        }

        try
        {
            while (pending.Count > 0 || active.Count > 0)
            {
                cancellationToken.ThrowIfCancellationRequested();
                while (pending.Count > 0 && Session.FreeSlots > 0 && Admits(requests[pending.Peek()].Prompt.Count, active.Count == 0, pending.Peek()))
                {
                    int r = pending.Dequeue();
                    var req = requests[r];
                    var a = new Active(r, Session.AddSequence(), new Sampler(req.Options), new List<long>(req.Prompt));
                    var t0 = prefillWatch.Elapsed;
                    prefillWatch.Start();
                    var logits = Session.Prefill(a.Sequence, req.Prompt.ToArray());
                    prefillWatch.Stop();
                    a.PrefillTime = prefillWatch.Elapsed - t0;
                    promptTokens += req.Prompt.Count;
                    if (!Emit(a, a.Sampler.Next(logits, a.History))) active.Add(a);
                }
                if (active.Count == 0) continue;
                var t1 = decodeWatch.Elapsed;
                decodeWatch.Start();
                var rows = Session.Decode(active.Select(a => a.Sequence).ToArray(), active.Select(a => a.Tokens[^1]).ToArray());
                decodeWatch.Stop();
                steps++;
                var dt = decodeWatch.Elapsed - t1;
                var finished = new List<Active>();
                for (int i = 0; i < active.Count; i++)
                {
                    active[i].DecodeTime += dt;
                    if (Emit(active[i], active[i].Sampler.Next(rows[i], active[i].History))) finished.Add(active[i]);
                }
                foreach (var f in finished) active.Remove(f);
            }
        }
        finally
        {
            foreach (var a in active) RemoveQuietly(a.Sequence);
            LastStats = new GenerationStats(promptTokens, generated, prefillWatch.Elapsed, decodeWatch.Elapsed, steps);
        }
        return results.Select(r => r!).ToArray();
    }

    private sealed class Active(int request, int sequence, Sampler sampler, List<long> history)
    {
        public int Request { get; } = request;
        public int Sequence { get; } = sequence;
        public Sampler Sampler { get; } = sampler;
        public List<long> History { get; } = history;
        public List<long> Tokens { get; } = new();
        public TimeSpan PrefillTime { get; set; }
        public TimeSpan DecodeTime { get; set; }
    }
}
