namespace MixAttention.Onnx.Runtime;

/// <summary>
/// The one-call-at-a-time rule of a decoding session, enforced with one compare-exchange per call (no lock): a call
/// that starts while another runs fails with <see cref="InvalidOperationException"/> instead of racing on the
/// bindings and caches, and a call after <see cref="Dispose"/> fails with <see cref="ObjectDisposedException"/>.
/// A <see cref="Dispose"/> that arrives while a call runs (from another thread) is deferred: the running call
/// finishes on live memory and releases the resources on its way out.
/// </summary>
internal sealed class CallGuard(string owner, Action release)
{
    private const int Idle = 0, Busy = 1, Closed = 2;
    private int _state;
    private int _disposeRequested;
    private volatile string? _running;

    /// <summary>True once <see cref="Dispose"/> was called.</summary>
    public bool IsDisposed => Volatile.Read(ref _disposeRequested) != 0;

    /// <summary>Throws <see cref="ObjectDisposedException"/> once disposed (for members that need no exclusive access).</summary>
    public void ThrowIfDisposed()
    {
        if (IsDisposed) throw Disposed();
    }

    private ObjectDisposedException Disposed() =>
        new(owner, $"this {owner} was disposed; create a new session with MixAttentionModel.CreateSession.");

    /// <summary>Starts <paramref name="operation"/>; dispose the scope when it ends.</summary>
    public Scope Enter(string operation)
    {
        int previous = Interlocked.CompareExchange(ref _state, Busy, Idle);
        if (previous == Busy)
        {
            if (IsDisposed) throw Disposed();
            throw new InvalidOperationException(
                $"{owner} is not thread-safe: a {_running ?? "call"} is already running on another thread (this call: {operation}). " +
                "Call a session from one thread at a time; use one session per thread to decode in parallel (sessions of one model may run concurrently).");
        }
        if (previous == Closed) throw Disposed();
        if (IsDisposed)
        {
            Exit();
            throw Disposed();
        }
        _running = operation;
        return new Scope(this);
    }

    private void Exit()
    {
        _running = null;
        Interlocked.Exchange(ref _state, Idle);
        if (IsDisposed) TryClose();
    }

    /// <summary>Releases the resources now, or when the running call ends. A second call does nothing.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposeRequested, 1) != 0) return;
        TryClose();
    }

    private void TryClose()
    {
        if (Interlocked.CompareExchange(ref _state, Closed, Idle) == Idle) release();
    }

    /// <summary>Ends the call.</summary>
    public readonly ref struct Scope(CallGuard guard)
    {
        /// <summary>Ends the call (and runs a dispose that arrived meanwhile).</summary>
        public void Dispose() => guard.Exit();
    }
}
