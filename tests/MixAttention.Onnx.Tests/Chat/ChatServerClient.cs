using System.ClientModel;
using System.ClientModel.Primitives;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using OpenAI;
using OpenAI.Chat;

namespace MixAttention.Onnx.Tests.Chat;

/// <summary>What the server tests send: raw HTTP requests and the official OpenAI .NET client, against one base address.</summary>
internal sealed class ChatServerClient(HttpClient http)
{
    public HttpClient Http { get; } = http;

    /// <summary>The official OpenAI client on this server (no retries, so a 429 shows as one).</summary>
    public ChatClient OpenAi(string model = "demo") => new(model, new ApiKeyCredential("not-checked"), new OpenAIClientOptions
    {
        Endpoint = new Uri(Http.BaseAddress!, "/v1"),
        Transport = new HttpClientPipelineTransport(Http),
        RetryPolicy = new ClientRetryPolicy(maxRetries: 0),
    });

    public static string Body(string prompt, int maxTokens, bool stream = false, string model = "demo") =>
        new JsonObject
        {
            ["model"] = model,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = prompt }),
            ["max_tokens"] = maxTokens,
            ["temperature"] = 0,
            ["stream"] = stream,
        }.ToJsonString();

    public Task<HttpResponseMessage> PostAsync(string json, CancellationToken ct = default) =>
        Http.PostAsync("/v1/chat/completions", new StringContent(json, Encoding.UTF8, "application/json"), ct);

    /// <summary>A greedy non-streamed completion's text (asserting 200).</summary>
    public async Task<string> CompleteAsync(string prompt, int maxTokens)
    {
        using var response = await PostAsync(Body(prompt, maxTokens));
        var text = await response.Content.ReadAsStringAsync();
        Assert.AreEqual(HttpStatusCode.OK, response.StatusCode, text);
        return JsonNode.Parse(text)!["choices"]![0]!["message"]!["content"]!.GetValue<string>();
    }

    /// <summary>The content of every <c>data:</c> event of a streamed completion, up to <c>[DONE]</c> (asserting it came).</summary>
    public static async Task<(string Text, string? Finish, int Events)> ReadStreamAsync(HttpResponseMessage response)
    {
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var text = new StringBuilder();
        string? finish = null;
        int events = 0;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            var data = line["data: ".Length..];
            if (data == "[DONE]") return (text.ToString(), finish, events);
            events++;
            var chunk = JsonNode.Parse(data)!;
            Assert.AreEqual("chat.completion.chunk", chunk["object"]!.GetValue<string>());
            foreach (var choice in chunk["choices"]!.AsArray())
            {
                text.Append(choice!["delta"]?["content"]?.GetValue<string>());
                finish ??= choice["finish_reason"]?.GetValue<string>();
            }
        }
        Assert.Fail("the stream ended without data: [DONE]");
        return default;
    }

    /// <summary>Asserts an OpenAI-shaped JSON error with <paramref name="status"/> and <paramref name="code"/>, and no stack trace.</summary>
    public static async Task<JsonNode> AssertErrorAsync(HttpResponseMessage response, HttpStatusCode status, string code)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.AreEqual(status, response.StatusCode, text);
        Assert.AreEqual("application/json", response.Content.Headers.ContentType?.MediaType, text);
        var error = JsonNode.Parse(text)!["error"]!;
        Assert.AreEqual(code, error["code"]!.GetValue<string>(), text);
        Assert.IsFalse(string.IsNullOrWhiteSpace(error["message"]!.GetValue<string>()));
        Assert.IsFalse(text.Contains("   at ", StringComparison.Ordinal) || text.Contains("Exception", StringComparison.Ordinal), "no stack trace or exception type in the body: " + text);
        return error;
    }
}
