namespace MixAttention.Onnx.Runtime;

/// <summary>
/// The paged-cache side of <see cref="ContinuousBatchingGenerator.Run"/> (docs/runtime.md, "Paged caches"): starts
/// sequences by free blocks, reusing the cached blocks of a prompt prefix (automatic prefix matching), keeps a small
/// LRU of retained prefixes, and frees blocks for a decode step by evicting retained prefixes (the generator preempts
/// running requests when that is not enough).
/// <para>
/// Prefix matching works on whole blocks and always leaves at least one prompt token to prefill (its logits give the
/// next token). A source is a running sequence (its processed tokens) or a retained prefix. When the model has caches
/// outside the block pool (sliding rings), a source can be reused only at its full length: a ring is the snapshot of
/// the last window at the source's current length. A prefix shared by a new prompt and a cached sequence but not
/// reusable (the source is longer, or no source holds it) is therefore prefilled once into a retained prefix — a
/// parked sequence of exactly those blocks, whose rings are the prefix's snapshot — and later prompts fork it.
/// </para>
/// </summary>
internal sealed class BlockScheduler
{
    /// <summary>Retained prefixes kept at most (each holds a batch slot and the prefix's blocks).</summary>
    internal const int DefaultRetainedPrefixes = 4;

    private readonly InPlaceCacheSession _session;
    private readonly List<RetainedPrefix> _retained = new(); // least recently used first
    private readonly int _blockSize;
    private readonly bool _fullLengthForks;
    private readonly int _maxRetained;

    /// <summary>Schedules <paramref name="session"/>'s blocks, keeping at most <paramref name="maxRetained"/> retained prefixes.</summary>
    /// <param name="session">The paged session (not owned).</param>
    /// <param name="maxRetained">Retained prefixes kept at most (0: none).</param>
    /// <param name="swap">Preempt by swapping to host memory (<see cref="PreemptionMode.Swap"/>) instead of recomputing.</param>
    public BlockScheduler(InPlaceCacheSession session, int maxRetained, bool swap = false)
    {
        Swaps = swap;
        _session = session;
        _blockSize = session.Caches.BlockSize ?? throw new ArgumentException("the session's caches are not paged", nameof(session));
        _fullLengthForks = session.ForksAtFullLengthOnly;
        // A parked sequence sits in decode steps' slot ranges: it must be skipped with new_lengths = 0, not fed a filler.
        _maxRetained = session.Model.Plan?.NewLengths is null ? 0 : maxRetained;
    }

    /// <summary>Tokens whose blocks were reused instead of prefilled.</summary>
    public int ReusedTokens { get; private set; }

    /// <summary>
    /// Starts a sequence for <paramref name="tokens"/> (a prompt, or a preempted request's processed tokens): finds the
    /// longest reusable cached prefix, takes a slot and checks the blocks (evicting retained prefixes when needed), and
    /// forks the prefix. Returns the sequence and how many of the tokens it already holds (the caller prefills the
    /// rest, at least one), or null when the request must wait for blocks or a slot. With nothing running
    /// (<paramref name="idle"/>) and still too few blocks for its tokens and one block to grow into, it never will: throws.
    /// </summary>
    public (int Sequence, int Cached)? TryStart(IReadOnlyList<long> tokens, IReadOnlyList<(int Sequence, IReadOnlyList<long> History)> running, bool idle, string what)
    {
        if (_session.FreeSlots < 1 && _retained.Count == 0) return null; // no slot to take: skip the matching
        int limit = (tokens.Count - 1) / _blockSize * _blockSize;
        int common = 0;
        (int Reuse, int Source, RetainedPrefix? Prefix) Find(bool retained)
        {
            (int Reuse, int Source, RetainedPrefix? Prefix) best = (0, -1, null);
            if (retained)
                foreach (var p in _retained)
                {
                    int c = CommonBlocks(tokens, p.Tokens, p.Tokens.Length, limit);
                    common = Math.Max(common, c);
                    int usable = !_fullLengthForks || c == p.Tokens.Length ? c : 0;
                    if (usable > best.Reuse) best = (usable, p.Sequence, p);
                }
            foreach (var (sequence, history) in running)
            {
                int length = _session.Length(sequence);
                int c = CommonBlocks(tokens, history, length, limit);
                common = Math.Max(common, c);
                int usable = !_fullLengthForks || c == length ? c : 0;
                if (usable > best.Reuse) best = (usable, sequence, null);
            }
            return best;
        }
        var (reuse, source, sourcePrefix) = Find(retained: true);

        // A slot: running requests come before retained prefixes (the source too, when nothing else can go).
        while (_session.FreeSlots < 1 && Evict(sourcePrefix, mustFreeBlocks: false)) { }
        if (_session.FreeSlots < 1 && sourcePrefix is not null)
        {
            Evict(sourcePrefix);
            (reuse, source, sourcePrefix) = Find(retained: false);
        }
        if (_session.FreeSlots < 1) return null;

        // Blocks: the prefill's, plus one to grow into, so admissions do not starve the running sequences.
        var caches = _session.Caches;
        int shared = reuse / _blockSize;
        int need = caches.BlocksFor(tokens.Count) + 1 - shared;
        while (need > caches.FreeBlocks && Evict(sourcePrefix, mustFreeBlocks: true)) { }
        if (need > caches.FreeBlocks)
        {
            if (idle)
                throw new MixAttentionException($"{what}: its {tokens.Count} tokens need {need} KV blocks (with one to grow into){(shared > 0 ? $" beyond {shared} cached" : "")} but the session's paged caches have {caches.FreeBlocks} free of {caches.TotalBlocks} with nothing else running; open the session with a larger SessionConfig.KvBlocks.");
            return null;
        }

        int start = reuse;
        if (common >= _blockSize && _maxRetained > 0 && _session.FreeSlots >= 2 && !IsRetained(tokens, common)
            && (_retained.Count < _maxRetained ? true : Evict(sourcePrefix, mustFreeBlocks: false)))
        {
            // Retain the shared prefix (its blocks count in `need`: the new sequence forks them).
            int parked = source >= 0 ? _session.ForkPrefix(source, start) : _session.AddSequence();
            var prefix = tokens.Take(common).ToArray();
            _retained.Add(sourcePrefix = new RetainedPrefix(parked, prefix)); // before the prefill: Clear removes it if that fails
            if (common > start) _session.Prefill(parked, prefix.AsSpan(start));
            (source, start) = (parked, common);
        }
        else if (sourcePrefix is not null)
        {
            _retained.Remove(sourcePrefix); // most recently used
            _retained.Add(sourcePrefix);
        }
        int id = source >= 0 ? _session.ForkPrefix(source, start) : _session.AddSequence();
        ReusedTokens += reuse;
        return (id, start);
    }

    /// <summary>
    /// Evicts retained prefixes that hold blocks of their own (least recently used first) until a decode step of
    /// <paramref name="sequences"/> finds its blocks free; false when it still does not.
    /// </summary>
    public bool MakeRoom(IReadOnlyList<int> sequences)
    {
        while (_session.BlocksToDecode(sequences) > _session.Caches.FreeBlocks)
            if (!Evict(null, mustFreeBlocks: true)) return false;
        return true;
    }

    /// <summary>Whether <see cref="Preempt"/> swaps the caches to host memory (else the owner recomputes on resume).</summary>
    public bool Swaps { get; }

    /// <summary>
    /// Preempts a running sequence: with <see cref="Swaps"/> its caches go to host memory first (returned, for
    /// <see cref="SwapBackIn"/>); otherwise it is removed and null returned (its owner recomputes it on resume).
    /// Either way its slot and blocks return to the session.
    /// </summary>
    public SwappedSequence? Preempt(int sequence)
    {
        if (Swaps) return _session.SwapOut(sequence);
        _session.RemoveSequence(sequence);
        return null;
    }

    /// <summary>
    /// Brings a swapped-out sequence back once a slot and its blocks plus one to grow into are free (as for an
    /// admission, so that the next decode step does not preempt it again at once; retained prefixes are evicted for it);
    /// returns its new id, or null when it must wait. With nothing running (<paramref name="idle"/>) and still too few
    /// blocks it never will: throws.
    /// </summary>
    public int? SwapBackIn(SwappedSequence held, bool idle, string what)
    {
        while (_session.FreeSlots < 1 && Evict(null, mustFreeBlocks: false)) { }
        while (held.Blocks + 1 > _session.Caches.FreeBlocks && Evict(null, mustFreeBlocks: true)) { }
        if (_session.FreeSlots < 1 || held.Blocks + 1 > _session.Caches.FreeBlocks)
        {
            if (idle)
                throw new MixAttentionException($"{what}: its {held.Length} positions need {held.Blocks + 1} KV blocks (with one to grow into) but the session's paged caches have {_session.Caches.FreeBlocks} free of {_session.Caches.TotalBlocks} with nothing else running; open the session with a larger SessionConfig.KvBlocks.");
            return null;
        }
        return _session.SwapIn(held) ?? throw new InvalidOperationException("a swap-in found no room after the scheduler made it");
    }

    /// <summary>Removes every retained prefix (the end of a run).</summary>
    public void Clear()
    {
        foreach (var p in _retained)
            if (_session.Sequences.Contains(p.Sequence)) _session.RemoveSequence(p.Sequence);
        _retained.Clear();
    }

    private bool IsRetained(IReadOnlyList<long> tokens, int length) =>
        _retained.Any(p => p.Tokens.Length == length && CommonBlocks(tokens, p.Tokens, length, length) == length);

    /// <summary>Evicts the least recently used retained prefix other than <paramref name="keep"/> (with blocks of its own, when asked).</summary>
    private bool Evict(RetainedPrefix? keep, bool mustFreeBlocks)
    {
        foreach (var p in _retained)
        {
            if (ReferenceEquals(p, keep) || (mustFreeBlocks && _session.ExclusiveBlocks(p.Sequence) == 0)) continue;
            Evict(p);
            return true;
        }
        return false;
    }

    private void Evict(RetainedPrefix prefix)
    {
        _retained.Remove(prefix);
        _session.RemoveSequence(prefix.Sequence);
    }

    /// <summary>The common prefix of <paramref name="tokens"/> and the first <paramref name="length"/> of <paramref name="other"/>, in whole blocks, at most <paramref name="limit"/>.</summary>
    private int CommonBlocks(IReadOnlyList<long> tokens, IReadOnlyList<long> other, int length, int limit)
    {
        int n = Math.Min(limit, Math.Min(length, Math.Min(tokens.Count, other.Count)));
        int i = 0;
        while (i < n && tokens[i] == other[i]) i++;
        return i / _blockSize * _blockSize;
    }
}
