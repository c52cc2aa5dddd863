using MixAttention.Onnx.Runtime;

namespace MixAttention.Onnx.Chat;

/// <summary>
/// The one decode loop of a <see cref="MixAttentionChatClient"/>: a background thread that owns every call on the
/// session (sessions serve one call at a time). Each turn it drops cancelled requests (their slots are freed at once),
/// admits waiting requests into free slots (prefill alone, first token), then decodes every live request in one batched
/// step. Admission is bounded: slots + queue limit requests at most, so a burst is refused, not allocated.
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
    private int _admitted;
    private int _freeSlots;
    private volatile bool _stopping;

    public ChatScheduler(IDecoderSession session, OrtExtensionsTokenizer tokenizer, int maxQueued)
    {
        _session = session;
        _tokenizer = tokenizer;
        _maxQueued = maxQueued;
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
        while (_session.FreeSlots > 0)
        {
            ChatRequest? r;
            lock (_gate)
            {
                if (!_waiting.TryDequeue(out r)) return;
                _active.Add(r);
                _admitted++;
            }
            if (r.IsCancelled)
            {
                Retire(r, new OperationCanceledException("the chat request was cancelled."));
                continue;
            }
            try
            {
                r.Sequence = _session.AddSequence();
                var logits = _session.Prefill(r.Sequence, r.Prompt);
                Steps++;
                if (r.Accept(r.Sampler.Next(logits, r.History), _tokenizer, _session.Length(r.Sequence) >= _session.Config.MaxLength) is not null) Retire(r, null);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Retire(r, e);
            }
        }
    }

    private void DecodeStep()
    {
        var live = _active.Where(r => !r.IsFinished && !r.IsCancelled).ToList();
        if (live.Count == 0) return;
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
        var left = new List<ChatRequest>(_active);
        lock (_gate) left.AddRange(_waiting);
        foreach (var r in left) Retire(r, new ObjectDisposedException(nameof(MixAttentionChatClient), "the chat client was disposed while this request ran."));
        lock (_gate) _waiting.Clear();
        _wake.Dispose();
    }
}
