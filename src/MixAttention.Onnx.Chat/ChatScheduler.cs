using MixAttention.Onnx.Runtime;

namespace MixAttention.Onnx.Chat;

/// <summary>
/// The one decode loop of a <see cref="MixAttentionChatClient"/>: a background thread that owns every call on the
/// session (sessions serve one call at a time). Each turn it drops cancelled requests (their slots are freed at once),
/// admits waiting requests into free slots (prefill alone, first token), then decodes every live request in one batched
/// step. Admission is bounded: slots + queue limit requests at most, so a burst is refused, not allocated.
/// <para>
/// Paged caches (docs/runtime.md, "Paged caches") are scheduled as <see cref="ContinuousBatchingGenerator.Run"/> does,
/// with its <see cref="BlockScheduler"/>: a request starts when its blocks are free, reusing the cached blocks of a
/// prompt prefix it shares with a running request (a system prompt is stored once); a decode step short of blocks
/// preempts the most recently admitted request — its caches swapped to host memory — and preempted requests resume, where they stopped, before waiting ones start. Their streams only pause.
/// </para>
/// </summary>
internal sealed class ChatScheduler : IDisposable
{
    private readonly IDecoderSession _session;
    private readonly OrtExtensionsTokenizer _tokenizer;
    private readonly int _maxQueued;
    private readonly Lock _gate = new();
    private readonly Queue<ChatRequest> _waiting = new();
    private readonly List<ChatRequest> _active = new();
    private readonly SemaphoreSlim _wake = new(0);
    private readonly Thread _thread;
    private readonly BlockScheduler? _blocks; // paged caches (preemption swaps them to host memory)
    private readonly List<ChatRequest> _preempted = new(); // they resume first, in admission order
    private int _admitted;
    private int _freeSlots;
    private volatile bool _stopping;

    public ChatScheduler(IDecoderSession session, OrtExtensionsTokenizer tokenizer, int maxQueued)
    {
        _session = session;
        _tokenizer = tokenizer;
        _maxQueued = maxQueued;
        if (session is InPlaceCacheSession { Caches.BlockSize: not null } paged)
            _blocks = new BlockScheduler(paged, BlockScheduler.DefaultRetainedPrefixes, swap: true);
        _freeSlots = session.FreeSlots;
        _thread = new Thread(Loop) { IsBackground = true, Name = "MixAttention chat decode loop" };
        _thread.Start();
    }

    /// <summary>Requests holding a slot (prefilled or decoding).</summary>
    public int Active { get { lock (_gate) return _admitted; } }
    /// <summary>Requests waiting for a slot.</summary>
    public int Waiting { get { lock (_gate) return _waiting.Count; } }
    /// <summary>The session's free slots as the loop last left them.</summary>
    public int FreeSlots => Volatile.Read(ref _freeSlots);
    /// <summary>Model steps (prefills and batched decodes) run so far.</summary>
    public long Steps { get; private set; }
    /// <summary>Most requests one decode step has carried.</summary>
    public int MaxStepBatch { get; private set; }
    /// <summary>Paged caches: times a running request was preempted because a decode step was short of blocks.</summary>
    public int Preemptions { get; private set; }
    /// <summary>Paged caches: prompt tokens not prefilled because their blocks were cached (shared prefixes).</summary>
    public int ReusedTokens => _blocks?.ReusedTokens ?? 0;
    /// <summary>Requests dropped because their caller cancelled (or stopped reading) before they finished.</summary>
    public int Cancelled => Volatile.Read(ref _cancelled);
    private int _cancelled;

    /// <summary>Test hook: runs on the loop thread before each batched decode step (tests hold the loop here).</summary>
    internal Action? BeforeDecode { get; set; }

    /// <summary>Live requests whose caller has cancelled; read it only while the loop is held in <see cref="BeforeDecode"/>.</summary>
    internal int CancelRequestedWhileHeld => _active.Count(r => r.IsCancelled);

    /// <summary>Queues a request or refuses it when every slot is busy and the queue is full.</summary>
    public void Enqueue(ChatRequest request)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_stopping, typeof(MixAttentionChatClient));
            int slots = _session.Config.MaxBatch;
            if (_admitted + _waiting.Count >= slots + _maxQueued) throw new ChatCapacityException(slots, _waiting.Count);
            _waiting.Enqueue(request);
        }
        _wake.Release();
    }

    /// <summary>Wakes the loop (a request was cancelled).</summary>
    public void Wake() => _wake.Release();

    private void Loop()
    {
        while (!_stopping)
        {
            bool idle;
            lock (_gate) idle = _waiting.Count == 0 && _active.Count == 0;
            if (idle)
            {
                _wake.Wait();
                continue;
            }
            foreach (var r in _active.Where(r => r.IsCancelled).ToList()) Retire(r, new OperationCanceledException("the chat request was cancelled."));
            Admit();
            DecodeStep();
            Volatile.Write(ref _freeSlots, _session.FreeSlots);
        }
    }

    private void Admit()
    {
        while (_preempted.Count > 0)
        {
            var p = _preempted[0];
            if (p.IsCancelled)
            {
                Retire(p, new OperationCanceledException("the chat request was cancelled.")); // leaves _preempted too
                continue;
            }
            try
            {
                if (!Resume(p)) return; // its blocks are not free yet: nothing new starts before it
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Retire(p, e);
                continue;
            }
            _preempted.RemoveAt(0);
        }
        while (_blocks is not null || _session.FreeSlots > 0)
        {
            ChatRequest? r;
            lock (_gate)
            {
                if (!_waiting.TryPeek(out r)) return;
            }
            if (r.IsCancelled)
            {
                Take(r);
                Retire(r, new OperationCanceledException("the chat request was cancelled."));
                continue;
            }
            try
            {
                int cached = 0;
                if (_blocks is null)
                {
                    Take(r);
                    r.Sequence = _session.AddSequence();
                }
                else
                {
                    // By free blocks: null = wait (blocks or a slot are busy); the first in line holds back the others.
                    if (_blocks.TryStart(r.Prompt, Running(), Live().Count == 0, "the chat request") is not { } started) return;
                    Take(r);
                    (r.Sequence, cached) = started;
                }
                var logits = _session.Prefill(r.Sequence, r.Prompt[cached..]);
                Steps++;
                if (r.Accept(r.Sampler.Next(logits, r.History), _tokenizer, _session.Length(r.Sequence) >= _session.Config.MaxLength) is not null) Retire(r, null);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Take(r);
                Retire(r, e);
            }
        }
    }

    /// <summary>Moves the first waiting request (<paramref name="r"/>) to the admitted ones (no-op when it already is).</summary>
    private void Take(ChatRequest r)
    {
        lock (_gate)
        {
            if (!_waiting.TryPeek(out var first) || !ReferenceEquals(first, r)) return;
            _waiting.Dequeue();
            _active.Add(r);
            _admitted++;
        }
    }

    /// <summary>Requests holding a sequence (not preempted), in admission order.</summary>
    private List<ChatRequest> Live() => _active.Where(r => !r.IsFinished && !r.IsCancelled && r.Sequence >= 0).ToList();

    private List<(int Sequence, IReadOnlyList<long> History)> Running() =>
        Live().Select(r => (r.Sequence, (IReadOnlyList<long>)r.History)).ToList();

    /// <summary>
    /// Brings a preempted request back; false when its blocks are not free yet. Swapped: its caches are copied back.
    /// Recomputed: its prompt and generated tokens but the last are prefilled again (the last was sampled and sent but
    /// never fed: the next decode step feeds it), reusing cached prefix blocks, and those logits are dropped.
    /// </summary>
    private bool Resume(ChatRequest r)
    {
        bool idle = Live().Count == 0;
        if (r.Swapped is { } held)
        {
            if (_blocks!.SwapBackIn(held, idle, "the chat request (resuming after preemption)") is not { } id) return false;
            r.Sequence = id;
            r.Swapped = null;
            return true;
        }
        var processed = r.History.Take(r.History.Count - 1).ToArray();
        if (_blocks!.TryStart(processed, Running(), idle, "the chat request (resuming after preemption)") is not { } started) return false;
        (r.Sequence, int cached) = started;
        _session.Prefill(r.Sequence, processed[cached..]);
        Steps++;
        return true;
    }

    /// <summary>Frees the blocks of <paramref name="r"/> (swapped to host memory, or dropped to recompute) and queues it to resume.</summary>
    private void Preempt(ChatRequest r)
    {
        r.Swapped = _blocks!.Preempt(r.Sequence);
        r.Sequence = -1;
        _preempted.Insert(0, r); // preempted after those still running, before those preempted earlier
        Preemptions++;
    }

    private void DecodeStep()
    {
        var live = Live();
        if (live.Count == 0) return;
        if (_blocks is not null)
        {
            try
            {
                // Too few free blocks for this step: retained prefixes go first, then the most recently admitted request.
                while (!_blocks.MakeRoom(live.Select(r => r.Sequence).ToArray()) && live.Count > 1)
                {
                    Preempt(live[^1]);
                    live.RemoveAt(live.Count - 1);
                }
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                foreach (var r in live) Retire(r, e);
                return;
            }
        }
        BeforeDecode?.Invoke();
        float[][] rows;
        try
        {
            rows = _session.Decode(live.Select(r => r.Sequence).ToArray(), live.Select(r => r.Tokens[^1]).ToArray());
            Steps++;
            MaxStepBatch = Math.Max(MaxStepBatch, live.Count);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            foreach (var r in live) Retire(r, e);
            return;
        }
        for (int i = 0; i < live.Count; i++)
        {
            var r = live[i];
            try
            {
                if (r.Accept(r.Sampler.Next(rows[i], r.History), _tokenizer, _session.Length(r.Sequence) >= _session.Config.MaxLength) is not null) Retire(r, null);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Retire(r, e);
            }
        }
    }

    /// <summary>Frees the request's slot and ends it: normally (its finish chunk was sent) or with <paramref name="error"/>.</summary>
    private void Retire(ChatRequest r, Exception? error)
    {
        if (r.Sequence >= 0)
        {
            try
            {
                _session.RemoveSequence(r.Sequence);
            }
            catch (ObjectDisposedException)
            {
            }
            r.Sequence = -1;
        }
        r.Swapped = null;
        _preempted.Remove(r);
        if (error is OperationCanceledException) Interlocked.Increment(ref _cancelled);
        if (error is not null) r.Fail(error);
        lock (_gate)
        {
            if (_active.Remove(r)) _admitted--;
        }
    }

    /// <summary>Stops the loop (after its current step) and fails what is left.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_stopping) return;
            _stopping = true;
        }
        _wake.Release();
        _thread.Join();
        _blocks?.Clear();
        var left = new List<ChatRequest>(_active);
        lock (_gate) left.AddRange(_waiting);
        foreach (var r in left) Retire(r, new ObjectDisposedException(nameof(MixAttentionChatClient), "the chat client was disposed while this request ran."));
        lock (_gate) _waiting.Clear();
        _wake.Dispose();
    }
}
