using System.Threading.Channels;
using MixAttention.Onnx.Runtime;

namespace MixAttention.Onnx.Chat;

/// <summary>
/// One chat call inside the decode loop: its prompt, sampler and limits, the tokens so far, and the reply text turned
/// into chunks. Stop sequences are matched on the decoded text; text that could still become a stop sequence (a suffix
/// that is a prefix of one) is held back until it cannot, so a stop sequence never reaches the caller, streamed or not.
/// Everything but <see cref="Cancel"/> and <see cref="Output"/>'s reader runs on the loop thread.
/// </summary>
internal sealed class ChatRequest
{
    private readonly List<long> _textTokens = new();
    private string _text = "";
    private int _sent;
    private int _cancelled;

    public ChatRequest(long[] prompt, Sampler sampler, int maxTokens, IReadOnlyCollection<long> stopTokens, IReadOnlyList<string> stopSequences)
    {
        Prompt = prompt;
        Sampler = sampler;
        MaxTokens = maxTokens;
        StopTokens = stopTokens;
        StopSequences = stopSequences.Where(s => s.Length > 0).ToArray();
        History = new List<long>(prompt);
    }

    public long[] Prompt { get; }
    public Sampler Sampler { get; }
    public int MaxTokens { get; }
    public IReadOnlyCollection<long> StopTokens { get; }
    public IReadOnlyList<string> StopSequences { get; }
    /// <summary>Prompt and generated tokens (the repetition penalty's history).</summary>
    public List<long> History { get; }
    /// <summary>Generated tokens (a stop token included).</summary>
    public List<long> Tokens { get; } = new();
    /// <summary>The session's sequence id while it holds a slot, else -1 (waiting, or preempted).</summary>
    public int Sequence { get; set; } = -1;
    /// <summary>Preempted by swapping (paged caches): its caches in host memory until it resumes.</summary>
    internal SwappedSequence? Swapped { get; set; }
    public Channel<ChatChunk> Output { get; } = Channel.CreateUnbounded<ChatChunk>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    public bool IsCancelled => Volatile.Read(ref _cancelled) != 0;
    public bool IsFinished { get; private set; }

    /// <summary>Asks the loop to drop the request (any thread); the loop frees its slot at its next step.</summary>
    public bool Cancel() => Interlocked.Exchange(ref _cancelled, 1) == 0;

    /// <summary>Takes a new token; returns why the request ends, or null to go on.</summary>
    public FinishReason? Accept(long token, OrtExtensionsTokenizer tokenizer, bool atMaxLength)
    {
        Tokens.Add(token);
        History.Add(token);
        if (StopTokens.Contains(token))
        {
            // The end-of-sequence token ends the reply; its text is not part of it.
            Send(_text[_sent..], FinishReason.Stop);
            return FinishReason.Stop;
        }
        _textTokens.Add(token);
        var decoded = tokenizer.Decode(_textTokens);
        // A byte-level BPE token may end inside a UTF-8 character: wait for the rest before showing it.
        if (!decoded.EndsWith('\uFFFD')) _text = decoded;
        int stopAt = -1;
        foreach (var stop in StopSequences)
        {
            int i = _text.IndexOf(stop, StringComparison.Ordinal);
            if (i >= 0 && (stopAt < 0 || i < stopAt)) stopAt = i;
        }
        if (stopAt >= 0)
        {
            Send(_text[_sent..Math.Max(stopAt, _sent)], FinishReason.Stop);
            return FinishReason.Stop;
        }
        if (Tokens.Count >= MaxTokens || atMaxLength)
        {
            _text = decoded;
            Send(_text[_sent..], FinishReason.Length);
            return FinishReason.Length;
        }
        int hold = HeldBack();
        if (_text.Length - hold > _sent) Send(_text[_sent..(_text.Length - hold)], null);
        return null;
    }

    /// <summary>Length of the longest suffix of the text (not yet sent) that begins a stop sequence.</summary>
    private int HeldBack()
    {
        int best = 0;
        foreach (var stop in StopSequences)
            for (int k = Math.Min(stop.Length - 1, _text.Length - _sent); k > best; k--)
                if (_text.AsSpan(_text.Length - k).SequenceEqual(stop.AsSpan(0, k))) { best = k; break; }
        return best;
    }

    private void Send(string text, FinishReason? finish)
    {
        _sent += text.Length;
        if (text.Length > 0 || finish is not null) Output.Writer.TryWrite(new ChatChunk(text, Tokens.Count, finish));
        if (finish is not null)
        {
            IsFinished = true;
            Output.Writer.TryComplete();
        }
    }

    /// <summary>Ends the request with an error (or as cancelled) without a finish chunk.</summary>
    public void Fail(Exception error)
    {
        IsFinished = true;
        Output.Writer.TryComplete(error);
    }
}
