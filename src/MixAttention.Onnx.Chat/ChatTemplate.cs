using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;

namespace MixAttention.Onnx.Chat;

/// <summary>
/// Turns chat messages into the prompt text a model was trained on: the Jinja <c>chat_template</c> of its
/// <c>tokenizer_config.json</c>, rendered by @huggingface/jinja (the engine transformers.js uses) on Jint, with
/// <c>messages</c> (role and text of each), <c>add_generation_prompt</c> and the special tokens of the config
/// (<c>bos_token</c>, <c>eos_token</c>, …) in its context. A model without a template gets the plain transcript
/// one <c>role: text</c> line per message, then <c>assistant:</c> when a reply is wanted (docs/serving.md). Thread-safe.
/// </summary>
public sealed class ChatTemplate
{
    private static readonly string[] SpecialTokenKeys = ["bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"];
    private const long MaxConfigBytes = 16L << 20;
    private readonly JinjaEngine? _engine;
    private readonly IReadOnlyDictionary<string, string> _specialTokens;

    private ChatTemplate(string? source, IReadOnlyDictionary<string, string> specialTokens, TimeSpan? timeout = null)
    {
        Source = source;
        _specialTokens = specialTokens;
        _engine = source is null ? null : new JinjaEngine(source, timeout ?? JinjaEngine.DefaultTimeout);
    }

    /// <summary>The Jinja source, or null for the plain fallback.</summary>
    public string? Source { get; }

    /// <summary>The template of <paramref name="directory"/>/tokenizer_config.json (<c>chat_template</c>: a string, or a list of named templates of which <c>default</c> is taken); the plain fallback when it has none.</summary>
    public static ChatTemplate FromTokenizerConfig(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        var path = Path.Combine(directory, "tokenizer_config.json");
        if (!File.Exists(path)) throw new MixAttentionException($"{directory} has no tokenizer_config.json (the chat template and special tokens are read from it).");
        // A model folder is untrusted input: a config is small, so a huge file is refused before it is read.
        if (new FileInfo(path).Length > MaxConfigBytes) throw new MixAttentionException($"{path} is larger than {MaxConfigBytes >> 20} MiB; a tokenizer_config.json is far smaller.");
        var text = File.ReadAllText(path);
        JsonObject config;
        try
        {
            config = JsonNode.Parse(text) as JsonObject ?? throw new MixAttentionException($"{path} is not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new MixAttentionException($"{path} is not valid JSON: {e.Message}", e);
        }
        string? source = config["chat_template"] switch
        {
            JsonValue v when v.TryGetValue<string>(out var s) => s,
            JsonArray list => list.OfType<JsonObject>().FirstOrDefault(t => t["name"]?.GetValue<string>() == "default")?["template"]?.GetValue<string>()
                              ?? list.OfType<JsonObject>().FirstOrDefault()?["template"]?.GetValue<string>(),
            null => null,
            _ => throw new MixAttentionException($"{path}: chat_template must be a string or a list of {{\"name\", \"template\"}} objects."),
        };
        var special = new Dictionary<string, string>();
        foreach (var key in SpecialTokenKeys)
        {
            string? value = config[key] switch
            {
                JsonValue v when v.TryGetValue<string>(out var s) => s,
                JsonObject o => o["content"] is JsonValue c && c.TryGetValue<string>(out var s) ? s : null,
                _ => null,
            };
            if (value is not null) special[key] = value;
        }
        return new ChatTemplate(string.IsNullOrWhiteSpace(source) ? null : source, special);
    }

    /// <summary>A template from its Jinja source (null or blank: the plain fallback) and the special tokens its context gets.</summary>
    public static ChatTemplate FromString(string? source, IReadOnlyDictionary<string, string>? specialTokens = null) =>
        new(string.IsNullOrWhiteSpace(source) ? null : source, specialTokens ?? new Dictionary<string, string>());

    /// <summary>As <see cref="FromString(string?, IReadOnlyDictionary{string, string}?)"/> with another render time limit (tests).</summary>
    internal static ChatTemplate FromString(string? source, IReadOnlyDictionary<string, string>? specialTokens, TimeSpan timeout) =>
        new(string.IsNullOrWhiteSpace(source) ? null : source, specialTokens ?? new Dictionary<string, string>(), timeout);

    /// <summary>The prompt text of <paramref name="messages"/>; with <paramref name="addGenerationPrompt"/> it ends where the assistant's reply begins.</summary>
    public string Render(IEnumerable<ChatMessage> messages, bool addGenerationPrompt = true)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var list = messages.ToList();
        if (_engine is null)
        {
            var sb = new System.Text.StringBuilder();
            foreach (var m in list) sb.Append(m.Role.Value).Append(": ").Append(m.Text).Append('\n');
            if (addGenerationPrompt) sb.Append("assistant:");
            return sb.ToString();
        }
        var context = new JsonObject
        {
            ["messages"] = new JsonArray(list.Select(m => (JsonNode)new JsonObject { ["role"] = m.Role.Value, ["content"] = m.Text }).ToArray()),
            ["add_generation_prompt"] = addGenerationPrompt,
        };
        foreach (var (key, value) in _specialTokens) context[key] = value;
        return _engine.Render(context.ToJsonString());
    }
}
