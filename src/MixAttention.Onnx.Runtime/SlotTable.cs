namespace MixAttention.Onnx.Runtime;

/// <summary>
/// The batch slots of a decoding session: which sequence holds each slot and how many tokens it has processed.
/// Sequence ids are handed out in order and never reused; slots are (lowest free first), so a session's caches
/// can keep one row per slot for its whole life. Grows with the slots in use, not with the slots allowed
/// (a session may allow far more than it will ever fill).
/// </summary>
internal sealed class SlotTable(int slots)
{
    private readonly List<int?> _sequenceAt = new(); // slots ever used; later ones are free
    private readonly List<int> _length = new();
    private readonly Dictionary<int, int> _slotOf = new();
    private int _nextId;

    /// <summary>Ids of the live sequences.</summary>
    public IReadOnlyCollection<int> Sequences => _slotOf.Keys;
    /// <summary>All slots, free or not (SessionConfig.MaxBatch).</summary>
    public int Count => slots;
    /// <summary>Slots no sequence holds.</summary>
    public int FreeCount => slots - _slotOf.Count;

    /// <summary>The lowest free slot, or -1 when every slot is taken.</summary>
    public int FirstFree()
    {
        int slot = _sequenceAt.IndexOf(null);
        return slot >= 0 ? slot : _sequenceAt.Count < slots ? _sequenceAt.Count : -1;
    }

    /// <summary>The sequence in <paramref name="slot"/>, or null when it is free.</summary>
    public int? SequenceAt(int slot) => slot < _sequenceAt.Count ? _sequenceAt[slot] : null;

    /// <summary>Tokens the sequence in <paramref name="slot"/> has processed (0 for a free slot).</summary>
    public int Length(int slot) => slot < _length.Count ? _length[slot] : 0;

    /// <summary>Records <paramref name="tokens"/> more processed tokens in <paramref name="slot"/>.</summary>
    public void Advance(int slot, int tokens) => _length[slot] += tokens;

    /// <summary>The slot of a live sequence; <see cref="MixAttentionException"/> naming the live ones otherwise.</summary>
    public int SlotOf(int sequence) => _slotOf.TryGetValue(sequence, out var s) ? s : throw UnknownSequence(sequence);

    /// <summary>Starts an empty sequence in free slot <paramref name="slot"/> (<see cref="FirstFree"/>); returns its new id.</summary>
    public int Add(int slot)
    {
        int id = _nextId++;
        if (slot == _sequenceAt.Count)
        {
            _sequenceAt.Add(null);
            _length.Add(0);
        }
        _sequenceAt[slot] = id;
        _length[slot] = 0;
        _slotOf[id] = slot;
        return id;
    }

    /// <summary>Frees the slot of a live sequence.</summary>
    public void Remove(int sequence)
    {
        int slot = SlotOf(sequence);
        _sequenceAt[slot] = null;
        _length[slot] = 0;
        _slotOf.Remove(sequence);
    }

    /// <summary>Frees every slot (ids keep counting up).</summary>
    public void Clear()
    {
        _sequenceAt.Clear();
        _length.Clear();
        _slotOf.Clear();
    }

    private MixAttentionException UnknownSequence(int sequence)
    {
        var live = _slotOf.Keys;
        return new($"sequence {sequence} does not exist in this session (removed, or never added by AddSequence); live sequences: {(live.Count == 0 ? "none" : string.Join(", ", live.Order().Take(16)) + (live.Count > 16 ? ", …" : ""))}.");
    }
}
