namespace MixAttention.Onnx.Plan;

/// <summary>
/// The capacity rule of a cache plan, in one place for the converter's estimates and the runtime's allocation:
/// a global owner holds every position (the runtime's max length, or the context), a sliding owner a
/// ring of its window — plus <c>prefill chunk − 1</c> slots when other layers read it, because a reader runs after
/// its owner has written the whole chunk, so the ring must still hold the chunk's first token's window then.
/// </summary>
public static class CacheCapacity
{
    /// <summary>Slots of the ring of a sliding owner with window <paramref name="window"/>.</summary>
    public static long Ring(int window, bool hasReaders, int prefillChunk) =>
        (long)window + (hasReaders ? prefillChunk - 1L : 0);

    /// <summary>Slots of <paramref name="entry"/>'s cache in a runtime of these sizes; null when it grows each step.</summary>
    public static long? Of(CacheEntry entry, int maxLength, int prefillChunk)
    {
        ArgumentNullException.ThrowIfNull(entry);
        return entry.Capacity switch
        {
            CapacityRule.Window => Ring(entry.Window, entry.Readers.Count > 0, prefillChunk),
            CapacityRule.MaxLength => maxLength,
            _ => null,
        };
    }
}
