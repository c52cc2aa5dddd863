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

    /// <summary>
    /// How <see cref="Run"/> preempts a running request when a decode step of a paged session finds too few free
    /// blocks: <see cref="PreemptionMode.Recompute"/> (the default) or <see cref="PreemptionMode.Swap"/>.
    /// </summary>
    public PreemptionMode Preemption { get; init; } = PreemptionMode.Recompute;

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
    /// <para>
    /// On a session with paged caches (<see cref="KvCacheSet.BlockSize"/>) requests are admitted by free blocks, in
    /// order. A decode step that needs more blocks than are free first evicts retained prefixes, then preempts the most
    /// recently admitted running request: its blocks and slot are freed, its prompt and generated tokens kept, and, with
    /// <see cref="Preemption"/> = <see cref="PreemptionMode.Swap"/>, its caches copied to host memory. A
    /// preempted request resumes before new ones are admitted — by copying its caches back, or by prefilling its prompt
    /// and generated tokens again — and continues where it stopped (no token is repeated or lost in the stream). A prompt that starts with the
    /// cached full blocks of another running request or of a retained prefix forks them instead of recomputing them
    /// (<see cref="GenerationStats.ReusedTokens"/>). <see cref="KvBlocksExhaustedException"/> and the "larger KvBlocks"
    /// error come only when one request alone cannot fit the pool.
    /// </para>
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
        var preempted = new List<Active>(); // admission order; they resume before pending requests are admitted
        var active = new List<Active>(); // admission order: the last one is preempted first
        var results = new GenerationResult?[requests.Count];
        var prefillWatch = new Stopwatch();
        var decodeWatch = new Stopwatch();
        Active? next = null; // the first pending request, while it waits for a slot or blocks
        int steps = 0, promptTokens = 0, generated = 0, preemptions = 0, recomputed = 0, maxRunning = 0, maxUsed = 0, maxShared = 0, swapped = 0;
        long swappedBytes = 0;
        var blocks = Session is InPlaceCacheSession { Caches.BlockSize: not null } paged
            ? new BlockScheduler(paged, RetainedPrefixes, swap: Preemption == PreemptionMode.Swap) : null;

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

        long Sample(Active a, float[] logits)
        {
            LogitsObserved?.Invoke(a.Request, a.Tokens.Count, logits);
            return a.Sampler.Next(logits, a.History);
        }

        // Starts a sequence for the tokens (a prompt; on resume, everything the request processed before) and prefills
        // what its cache does not hold yet; false when it must wait for a slot or blocks.
        bool Start(Active a, IReadOnlyList<long> tokens, out float[] logits, out int cached)
        {
            logits = Array.Empty<float>();
            cached = 0;
            var t0 = prefillWatch.Elapsed;
            prefillWatch.Start();
            try
            {
                if (blocks is null)
                {
                    if (Session.FreeSlots < 1) return false;
                    a.Sequence = Session.AddSequence();
                }
                else
                {
                    var what = a.Tokens.Count == 0 ? $"request {a.Request}" : $"request {a.Request} (resuming after preemption)";
                    if (blocks.TryStart(tokens, active.Select(x => (x.Sequence, (IReadOnlyList<long>)x.History)).ToList(), active.Count == 0, what) is not { } started) return false;
                    (a.Sequence, cached) = started;
                }
                logits = Session.Prefill(a.Sequence, tokens.Skip(cached).ToArray());
                return true;
            }
            catch
            {
                // Not running yet: nobody else would remove its sequence.
                if (a.Sequence >= 0) RemoveQuietly(a.Sequence);
                a.Sequence = -1;
                throw;
            }
            finally
            {
                prefillWatch.Stop();
                a.PrefillTime += prefillWatch.Elapsed - t0;
            }
        }

        try
        {
            while (pending.Count > 0 || preempted.Count > 0 || active.Count > 0)
            {
                cancellationToken.ThrowIfCancellationRequested();
                while (preempted.Count > 0)
                {
                    // Resume: the last token was generated but not yet fed; the next decode step feeds it.
                    var a = preempted[0];
                    if (a.Swapped is { } held)
                    {
                        if (blocks!.SwapBackIn(held, active.Count == 0, $"request {a.Request} (resuming after preemption)") is not { } id) break;
                        a.Sequence = id;
                        a.Swapped = null;
                    }
                    else
                    {
                        var processed = a.History.Take(a.History.Count - 1).ToArray();
                        if (!Start(a, processed, out _, out int cached)) break;
                        recomputed += processed.Length - cached;
                    }
                    preempted.RemoveAt(0);
                    active.Add(a);
                }
                while (preempted.Count == 0 && pending.Count > 0)
                {
                    int r = pending.Peek();
                    var req = requests[r];
                    var a = next is { } waiting && waiting.Request == r ? waiting : next = new Active(r, new Sampler(req.Options), new List<long>(req.Prompt));
                    if (!Start(a, req.Prompt, out var logits, out _)) break;
                    pending.Dequeue();
                    promptTokens += req.Prompt.Count;
                    if (!Emit(a, Sample(a, logits))) active.Add(a);
                }
                if (active.Count == 0) continue;
                if (blocks is not null)
                {
                    // Too few free blocks for this step: retained prefixes go first, then the most recently admitted request.
                    while (!blocks.MakeRoom(active.Select(x => x.Sequence).ToArray()) && active.Count > 1)
                    {
                        var victim = active[^1];
                        active.RemoveAt(active.Count - 1);
                        victim.Swapped = blocks.Preempt(victim.Sequence);
                        victim.Sequence = -1;
                        if (victim.Swapped is { } held)
                        {
                            swapped++;
                            swappedBytes += held.Bytes;
                        }
                        preempted.Insert(0, victim); // preempted after those still running, before those preempted earlier
                        preemptions++;
                    }
                }
                maxRunning = Math.Max(maxRunning, active.Count);
                if (Session is InPlaceCacheSession { Caches: var kv } && blocks is not null)
                {
                    maxUsed = Math.Max(maxUsed, kv.UsedBlocks);
                    maxShared = Math.Max(maxShared, kv.SharedBlocks);
                }
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
                    if (Emit(active[i], Sample(active[i], rows[i]))) finished.Add(active[i]);
                }
                foreach (var f in finished) active.Remove(f);
            }
        }
        finally
        {
            foreach (var a in active) RemoveQuietly(a.Sequence);
            if (blocks is not null) ClearQuietly(blocks);
            LastStats = new GenerationStats(promptTokens, generated, prefillWatch.Elapsed, decodeWatch.Elapsed, steps)
            {
                Preemptions = preemptions,
                RecomputedTokens = recomputed,
                SwappedOut = swapped,
                SwappedBytes = swappedBytes,
                ReusedTokens = blocks?.ReusedTokens ?? 0,
                MaxRunning = maxRunning,
                MaxUsedBlocks = maxUsed,
                MaxSharedBlocks = maxShared,
            };
        }
        return results.Select(r => r!).ToArray();
    }

    /// <summary>Retained prefixes a paged run keeps at most (tests lower it; 0 turns retention off).</summary>
    internal int RetainedPrefixes { get; set; } = BlockScheduler.DefaultRetainedPrefixes;

    /// <summary>Test hook: each logits row before its token is sampled: (request, index of the token it gives, logits).</summary>
    internal Action<int, int, float[]>? LogitsObserved { get; set; }

    /// <summary>Removes the retained prefixes on the way out of a run, unless the session is already gone.</summary>
    private static void ClearQuietly(BlockScheduler blocks)
    {
        try
        {
            blocks.Clear();
        }
        catch (ObjectDisposedException)
        {
        }
        catch (InvalidOperationException)
        {
        }
    }

    private sealed class Active(int request, Sampler sampler, List<long> history)
    {
        public int Request { get; } = request;
        public int Sequence { get; set; } = -1;
        public Sampler Sampler { get; } = sampler;
        public List<long> History { get; } = history;
        public List<long> Tokens { get; } = new();
        public TimeSpan PrefillTime { get; set; }
        public TimeSpan DecodeTime { get; set; }
        public SwappedSequence? Swapped { get; set; } // preempted with PreemptionMode.Swap: its caches in host memory
    }
}
