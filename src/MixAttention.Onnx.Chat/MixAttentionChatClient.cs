using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;
using MixAttention.Onnx.Runtime;

namespace MixAttention.Onnx.Chat;

/// <summary>
/// <see cref="IChatClient"/> over a MixAttention decoding session. Messages become a prompt through the model's chat
/// template (<see cref="ChatTemplate"/>); every call, from any thread, joins one continuously batched session driven by
/// one background decode loop: a call waits for a free batch slot (up to <see cref="MixAttentionChatClientOptions.MaxQueuedRequests"/>
/// waiting, beyond that <see cref="ChatCapacityException"/>), is prefilled, then decodes together with the others.
/// <para>
/// <see cref="ChatOptions"/>: <c>Temperature</c> (0 = greedy), <c>TopP</c>, <c>TopK</c>, <c>MaxOutputTokens</c>,
/// <c>Seed</c>, <c>StopSequences</c> (matched on the text; never part of the reply). Cancelling a call (or stopping a
/// streaming enumeration) frees its sequence's slot at the loop's next step. Responses report token usage.
/// </para>
/// The session and tokenizer belong to the caller unless the client was made by <see cref="Open"/>.
/// </summary>
public sealed class MixAttentionChatClient : IChatClient
{
    private readonly IDecoderSession _session;
    private readonly OrtExtensionsTokenizer _tokenizer;
    private readonly ChatTemplate _template;
    private readonly MixAttentionChatClientOptions _options;
    private readonly ChatScheduler _scheduler;
    private readonly IDisposable[] _owned;
    private readonly ChatClientMetadata _metadata;
    private int _disposed;

    /// <summary>A client over <paramref name="session"/> (not owned; no other code may call it while the client lives).</summary>
    public MixAttentionChatClient(IDecoderSession session, OrtExtensionsTokenizer tokenizer, ChatTemplate template, MixAttentionChatClientOptions? options = null)
        : this(session, tokenizer, template, options ?? new MixAttentionChatClientOptions(), [])
    {
    }

    private MixAttentionChatClient(IDecoderSession session, OrtExtensionsTokenizer tokenizer, ChatTemplate template, MixAttentionChatClientOptions options, IDisposable[] owned)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(template);
        options.Validate();
        _session = session;
        _tokenizer = tokenizer;
        _template = template;
        _options = options;
        _owned = owned;
        _metadata = new ChatClientMetadata("mixattention", null, options.ModelId);
        _scheduler = new ChatScheduler(session, tokenizer, options.MaxQueuedRequests);
    }

    /// <summary>
    /// Opens <paramref name="modelDirectory"/>/model.onnx on the CPU (converted or not), a session of <paramref name="config"/>,
    /// and the tokenizer and chat template of <paramref name="tokenizerDirectory"/> (default: the model's folder). The client owns all of them.
    /// </summary>
    public static MixAttentionChatClient Open(string modelDirectory, SessionConfig config, MixAttentionChatClientOptions? options = null, string? tokenizerDirectory = null)
    {
        ArgumentNullException.ThrowIfNull(modelDirectory);
        ArgumentNullException.ThrowIfNull(config);
        tokenizerDirectory ??= modelDirectory;
        var template = ChatTemplate.FromTokenizerConfig(tokenizerDirectory);
        var owned = new List<IDisposable>();
        try
        {
            var tokenizer = OrtExtensionsTokenizer.FromDirectory(tokenizerDirectory);
            owned.Add(tokenizer);
            var model = MixAttentionModel.Open(Path.Combine(modelDirectory, "model.onnx"), new ModelOptions { Device = ExecutionDevice.Cpu });
            owned.Add(model);
            var session = model.CreateSession(config);
            owned.Insert(0, session);
            return new MixAttentionChatClient(session, tokenizer, template, options ?? new MixAttentionChatClientOptions(), owned.ToArray());
        }
        catch
        {
            foreach (var d in owned) d.Dispose();
            throw;
        }
    }

    /// <summary>The session every call runs on.</summary>
    public IDecoderSession Session => _session;
    /// <summary>The tokenizer.</summary>
    public OrtExtensionsTokenizer Tokenizer => _tokenizer;
    /// <summary>The chat template.</summary>
    public ChatTemplate Template => _template;
    /// <summary>The settings.</summary>
    public MixAttentionChatClientOptions Options => _options;
    /// <summary>Calls holding a batch slot now.</summary>
    public int ActiveRequests => _scheduler.Active;
    /// <summary>Calls waiting for a slot now.</summary>
    public int QueuedRequests => _scheduler.Waiting;
    /// <summary>The session's free batch slots as the decode loop last left them (every slot once all calls ended).</summary>
    public int FreeSlots => _scheduler.FreeSlots;

    /// <summary>The decode loop (tests read its step counters).</summary>
    internal ChatScheduler Scheduler => _scheduler;

    /// <summary>Tokens of the prompt <paramref name="messages"/> render to (what <c>UsageDetails.InputTokenCount</c> reports).</summary>
    internal long[] EncodePrompt(IEnumerable<ChatMessage> messages) => _tokenizer.Encode(_template.Render(messages));

    /// <inheritdoc />
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in GetStreamingResponseAsync(messages, options, cancellationToken).ConfigureAwait(false)) updates.Add(update);
        return updates.ToChatResponse();
    }

    /// <inheritdoc />
    public IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        // Everything a call can be refused for is checked here, before the first MoveNext: a bad call throws at once.
        var prompt = EncodePrompt(messages);
        if (prompt.Length == 0) throw new MixAttentionException("the messages render to an empty prompt; send at least one message with text.");
        int maxLength = _session.Config.MaxLength;
        if (prompt.Length >= maxLength) throw new ContextLengthExceededException(prompt.Length, maxLength);
        int maxTokens = options?.MaxOutputTokens ?? _options.DefaultMaxOutputTokens;
        if (maxTokens < 1) throw new MixAttentionException($"MaxOutputTokens must be >= 1, got {maxTokens}.");
        var generation = new GenerationOptions
        {
            MaxNewTokens = Math.Min(maxTokens, maxLength - prompt.Length),
            Temperature = options?.Temperature ?? _options.DefaultTemperature,
            TopP = options?.TopP ?? 1f,
            TopK = options?.TopK ?? 0,
            Seed = options?.Seed is { } seed ? unchecked((int)(seed ^ (seed >> 32))) : null,
            StopTokens = _tokenizer.StopTokens,
        };
        var request = new ChatRequest(prompt, new Sampler(generation), generation.MaxNewTokens, _tokenizer.StopTokens, options?.StopSequences?.ToArray() ?? []);
        cancellationToken.ThrowIfCancellationRequested();
        _scheduler.Enqueue(request);
        return Stream(request, cancellationToken);
    }

    private async IAsyncEnumerable<ChatResponseUpdate> Stream(ChatRequest request, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var id = "chatcmpl-" + Guid.NewGuid().ToString("N");
        var created = DateTimeOffset.UtcNow;
        using var registration = cancellationToken.Register(static state =>
        {
            var (r, s) = ((ChatRequest, ChatScheduler))state!;
            if (r.Cancel()) s.Wake();
        }, (request, _scheduler));
        try
        {
            await foreach (var chunk in request.Output.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                var update = new ChatResponseUpdate(ChatRole.Assistant, chunk.Text.Length > 0 ? chunk.Text : null)
                {
                    ResponseId = id,
                    MessageId = id,
                    ModelId = _options.ModelId,
                    CreatedAt = created,
                };
                if (chunk.Finish is { } finish)
                {
                    update.FinishReason = finish == FinishReason.Stop ? ChatFinishReason.Stop : ChatFinishReason.Length;
                    update.Contents.Add(new UsageContent(new UsageDetails
                    {
                        InputTokenCount = request.Prompt.Length,
                        OutputTokenCount = chunk.OutputTokens,
                        TotalTokenCount = request.Prompt.Length + chunk.OutputTokens,
                    }));
                }
                yield return update;
            }
        }
        finally
        {
            // A caller that stops early (break, dispose, cancel) gives its slot back.
            if (!request.IsFinished && request.Cancel()) _scheduler.Wake();
        }
    }

    /// <inheritdoc />
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return _metadata;
        if (serviceType.IsInstanceOfType(this)) return this;
        if (serviceType.IsInstanceOfType(_session)) return _session;
        return null;
    }

    /// <summary>Stops the decode loop (calls still running fail with <see cref="ObjectDisposedException"/>) and disposes what <see cref="Open"/> opened.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _scheduler.Dispose();
        foreach (var d in _owned) d.Dispose();
    }
}
