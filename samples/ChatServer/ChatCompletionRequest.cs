using System.Text.Json;
using Microsoft.Extensions.AI;

namespace MixAttention.Onnx.ChatServer;

/// <summary>
/// The fields of an OpenAI chat-completions request the server honours, read from the JSON body with every value
/// checked: a wrong type or range is a 400 naming the field, never an exception from deep inside.
/// </summary>
internal sealed record ChatCompletionRequest(string Model, IReadOnlyList<ChatMessage> Messages, ChatOptions Options, bool Stream, bool IncludeUsage)
{
    private static readonly HashSet<string> Roles = ["system", "developer", "user", "assistant", "tool"];

    public static ChatCompletionRequest Parse(JsonElement body)
    {
        if (body.ValueKind != JsonValueKind.Object) throw Bad("the request body must be a JSON object.", null);
        var model = body.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.String ? m.GetString()! : throw Bad("'model' is required and must be a string.", "model");
        if (!body.TryGetProperty("messages", out var msgs) || msgs.ValueKind != JsonValueKind.Array || msgs.GetArrayLength() == 0)
            throw Bad("'messages' is required and must be a non-empty array.", "messages");
        var messages = new List<ChatMessage>();
        int i = 0;
        foreach (var msg in msgs.EnumerateArray())
        {
            if (msg.ValueKind != JsonValueKind.Object) throw Bad($"messages[{i}] must be an object.", $"messages[{i}]");
            var role = msg.TryGetProperty("role", out var r) && r.ValueKind == JsonValueKind.String ? r.GetString()! : throw Bad($"messages[{i}].role is required and must be a string.", $"messages[{i}].role");
            if (!Roles.Contains(role)) throw Bad($"messages[{i}].role '{role}' is not one of {string.Join(", ", Roles)}.", $"messages[{i}].role");
            string text = "";
            if (msg.TryGetProperty("content", out var c))
            {
                text = c.ValueKind switch
                {
                    JsonValueKind.String => c.GetString()!,
                    JsonValueKind.Null => "",
                    JsonValueKind.Array => string.Concat(c.EnumerateArray().Select((part, j) =>
                        part.ValueKind == JsonValueKind.Object && part.TryGetProperty("type", out var t) && t.ValueEquals("text") && part.TryGetProperty("text", out var pt) && pt.ValueKind == JsonValueKind.String
                            ? pt.GetString()
                            : throw Bad($"messages[{i}].content[{j}] must be a text part ({{\"type\": \"text\", \"text\": \"...\"}}); this model reads text only.", $"messages[{i}].content"))),
                    _ => throw Bad($"messages[{i}].content must be a string or an array of text parts.", $"messages[{i}].content"),
                };
            }
            messages.Add(new ChatMessage(new ChatRole(role == "developer" ? "system" : role), text));
            i++;
        }
        var options = new ChatOptions { ModelId = model };
        if (Number(body, "temperature", 0, 2) is { } temperature) options.Temperature = (float)temperature;
        if (Number(body, "top_p", 0, 1) is { } topP)
        {
            if (topP == 0) throw Bad("'top_p' must be greater than 0.", "top_p");
            options.TopP = (float)topP;
        }
        if ((Integer(body, "max_completion_tokens", 1, int.MaxValue) ?? Integer(body, "max_tokens", 1, int.MaxValue)) is { } max) options.MaxOutputTokens = (int)max;
        if (Integer(body, "seed", long.MinValue, long.MaxValue) is { } seed) options.Seed = seed;
        if (Integer(body, "n", 1, 1) is null && body.TryGetProperty("n", out _) && body.GetProperty("n").ValueKind != JsonValueKind.Null) throw Bad("'n' must be 1.", "n");
        if (body.TryGetProperty("stop", out var stop) && stop.ValueKind != JsonValueKind.Null)
        {
            var list = stop.ValueKind switch
            {
                JsonValueKind.String => [stop.GetString()!],
                JsonValueKind.Array when stop.GetArrayLength() <= 4 && stop.EnumerateArray().All(s => s.ValueKind == JsonValueKind.String) => stop.EnumerateArray().Select(s => s.GetString()!).ToList(),
                _ => throw Bad("'stop' must be a string or an array of at most 4 strings.", "stop"),
            };
            options.StopSequences = list.Where(s => s.Length > 0).ToList();
        }
        bool stream = Bool(body, "stream") ?? false;
        bool includeUsage = body.TryGetProperty("stream_options", out var so) && so.ValueKind == JsonValueKind.Object && (Bool(so, "include_usage") ?? false);
        return new ChatCompletionRequest(model, messages, options, stream, includeUsage);
    }

    private static double? Number(JsonElement body, string name, double min, double max)
    {
        if (!body.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out var d) || d < min || d > max) throw Bad($"'{name}' must be a number in [{min}, {max}].", name);
        return d;
    }

    private static long? Integer(JsonElement body, string name, long min, long max)
    {
        if (!body.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out var n) || n < min || n > max) throw Bad($"'{name}' must be an integer in [{min}, {max}].", name);
        return n;
    }

    private static bool? Bool(JsonElement body, string name)
    {
        if (!body.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind switch { JsonValueKind.True => true, JsonValueKind.False => false, _ => throw Bad($"'{name}' must be true or false.", name) };
    }

    private static BadRequestException Bad(string message, string? param) => new(StatusCodes.Status400BadRequest, "invalid_request", message, param);
}
