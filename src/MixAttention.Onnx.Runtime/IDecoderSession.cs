namespace MixAttention.Onnx.Runtime;

/// <summary>
/// A decoding session: sequences with their own KV state, prefill and decode steps returning logits.
/// Sequence ids are handed out by <see cref="AddSequence"/> and never reused within a session.
/// Not thread-safe: one call at a time; a call that starts while another runs on another thread throws
/// <see cref="InvalidOperationException"/>. Different sessions of one model may run concurrently.
/// Holds a reference to its model until disposed (docs/runtime.md, "Thread safety and errors").
/// </summary>
public interface IDecoderSession : IDisposable
{
    /// <summary>The model.</summary>
    MixAttentionModel Model { get; }
    /// <summary>Sizes.</summary>
    SessionConfig Config { get; }
    /// <summary>Vocabulary size (length of each logits row).</summary>
    int VocabSize { get; }
    /// <summary>Ids of the live sequences.</summary>
    IReadOnlyCollection<int> Sequences { get; }
    /// <summary>Free batch slots.</summary>
    int FreeSlots { get; }

    /// <summary>Starts an empty sequence in a free slot (reusing slots of removed sequences); throws when all are taken.</summary>
    int AddSequence();
    /// <summary>Ends a sequence and frees its slot (its cache rows are left as they are and overwritten by the next user).</summary>
    void RemoveSequence(int sequence);
    /// <summary>Removes every sequence.</summary>
    void Reset();
    /// <summary>Tokens the sequence has processed.</summary>
    int Length(int sequence);

    /// <summary>
    /// Feeds <paramref name="tokens"/> to one sequence, in calls of at most <see cref="SessionConfig.PrefillChunk"/> tokens.
    /// Returns the logits of the last token (<see cref="VocabSize"/> floats), or of every token
    /// (tokens × vocab) when <paramref name="allPositions"/> is set.
    /// </summary>
    float[] Prefill(int sequence, ReadOnlySpan<long> tokens, bool allPositions = false);

    /// <summary>One token for each listed sequence, in one batched call where the model allows it; returns each sequence's logits.</summary>
    float[][] Decode(IReadOnlyList<int> sequences, IReadOnlyList<long> tokens);

    /// <summary>
    /// As <see cref="Decode(IReadOnlyList{int}, IReadOnlyList{long})"/>, writing sequence <c>i</c>'s logits to floats
    /// <c>[i × VocabSize, (i + 1) × VocabSize)</c> of <paramref name="logits"/> (exactly sequences × <see cref="VocabSize"/>
    /// long): no allocation per step, for serving loops that sample from a reused buffer.
    /// </summary>
    void Decode(IReadOnlyList<int> sequences, IReadOnlyList<long> tokens, Span<float> logits);

    /// <summary>KV memory now, per extra sequence, and for the unconverted model.</summary>
    SessionKvMemory Memory();
}
