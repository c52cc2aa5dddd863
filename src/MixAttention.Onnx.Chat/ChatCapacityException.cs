namespace MixAttention.Onnx.Chat;

/// <summary>
/// A chat request was refused because every batch slot of the session is busy and the wait queue is full: the
/// preallocated KV caches are the whole budget, so more requests wait or are refused, never allocated. Nothing ran;
/// retry later (the sample server answers 429 with Retry-After).
/// </summary>
public sealed class ChatCapacityException : MixAttentionException
{
    /// <summary>Creates the exception.</summary>
    public ChatCapacityException(int slots, int queued)
        : base($"the server is at capacity: all {slots} KV-cache slots are generating and {queued} requests are waiting (the queue limit); retry later.")
    {
        Slots = slots;
        Queued = queued;
    }

    /// <summary>Batch slots of the session (sequences generating at once).</summary>
    public int Slots { get; }
    /// <summary>Requests waiting for a slot when this one was refused.</summary>
    public int Queued { get; }
}
