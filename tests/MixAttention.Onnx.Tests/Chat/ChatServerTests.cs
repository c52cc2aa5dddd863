using System.Net;
using System.Text.Json.Nodes;
using OpenAI.Chat;

namespace MixAttention.Onnx.Tests.Chat;

/// <summary>
/// samples/ChatServer in-process (ASP.NET Core test host), driven by the official OpenAI .NET client and raw HTTP:
/// streamed and whole completions, 32 concurrent requests against the same prompts alone, cancellation mid-stream,
/// clean 4xx for bad requests, and load shedding (429) when every KV slot is busy and the queue is full.
/// </summary>
[TestClass]
public sealed class ChatServerTests
{
    private static ChatServerFactory _server = null!;
    private static ChatServerClient _client = null!;

    [ClassInitialize]
    public static void Start(TestContext _)
    {
        _server = new ChatServerFactory(maxBatch: 8, maxQueue: 32);
        _client = new ChatServerClient(_server.CreateClient());
    }

    [ClassCleanup]
    public static void Stop() => _server.Dispose();

    [TestMethod]
    public async Task ModelsListsTheServedModel()
    {
        var models = JsonNode.Parse(await _client.Http.GetStringAsync("/v1/models"))!;
        Assert.AreEqual("list", models["object"]!.GetValue<string>());
        Assert.AreEqual("demo", models["data"]![0]!["id"]!.GetValue<string>());
    }

    [TestMethod]
    public async Task OpenAiClientStreamedAndWholeCompletionsAgree()
    {
        var chat = _client.OpenAi();
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 20 };
        List<ChatMessage> messages = [new SystemChatMessage("Be brief."), new UserChatMessage("Tell me a story.")];
        ChatCompletion whole = (await chat.CompleteChatAsync(messages, options)).Value;
        Assert.AreEqual(ChatFinishReason.Length, whole.FinishReason);
        Assert.AreEqual(20, whole.Usage.OutputTokenCount);
        Assert.IsTrue(whole.Usage.InputTokenCount > 20);
        Assert.AreEqual("demo", whole.Model);
        var text = whole.Content[0].Text;
        Assert.IsTrue(text.Length > 0);

        var streamed = new System.Text.StringBuilder();
        ChatFinishReason? finish = null;
        ChatTokenUsage? usage = null;
        int updates = 0;
        await foreach (var u in chat.CompleteChatStreamingAsync(messages, options))
        {
            updates++;
            foreach (var part in u.ContentUpdate) streamed.Append(part.Text);
            finish ??= u.FinishReason;
            usage ??= u.Usage;
        }
        Assert.AreEqual(text, streamed.ToString());
        Assert.AreEqual(ChatFinishReason.Length, finish);
        Assert.IsTrue(updates > 2);
        Assert.IsNotNull(usage, "the OpenAI client asks for usage in the stream (stream_options.include_usage)");
        Assert.AreEqual(whole.Usage.InputTokenCount, usage.InputTokenCount);
        Assert.AreEqual(20, usage.OutputTokenCount);

        // Raw HTTP sees the same text, streamed or not.
        using var raw = await _client.PostAsync(ChatServerClient.Body("Tell me a story.", 20, stream: true));
        Assert.AreEqual("text/event-stream", raw.Content.Headers.ContentType?.MediaType);
        var (rawText, rawFinish, _) = await ChatServerClient.ReadStreamAsync(raw);
        Assert.AreEqual(await _client.CompleteAsync("Tell me a story.", 20), rawText);
        Assert.AreEqual("length", rawFinish);
    }

    [TestMethod]
    public async Task ThirtyTwoConcurrentRequestsEqualTheSamePromptsAlone()
    {
        var prompts = Enumerable.Range(0, 32).Select(ChatFixtures.Prompt).ToArray();
        var alone = new List<string>();
        foreach (var p in prompts) alone.Add(await _client.CompleteAsync(p, 12));
        long stepsBefore = _server.Host.Client.Scheduler.Steps;
        // Half raw HTTP, half streamed through the OpenAI client, all at once.
        var chat = _client.OpenAi();
        var together = await Task.WhenAll(prompts.Select((p, i) => Task.Run(async () =>
        {
            if (i % 2 == 0) return await _client.CompleteAsync(p, 12);
            var sb = new System.Text.StringBuilder();
            await foreach (var u in chat.CompleteChatStreamingAsync([new UserChatMessage(p)], new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 12 }))
                foreach (var part in u.ContentUpdate) sb.Append(part.Text);
            return sb.ToString();
        })));
        CollectionAssert.AreEqual(alone, together);
        Assert.IsTrue(_server.Host.Client.Scheduler.MaxStepBatch > 1, "the concurrent requests should share decode steps");
        // Batched: far fewer model steps than 32 requests × 12 tokens run one by one.
        Assert.IsTrue(_server.Host.Client.Scheduler.Steps - stepsBefore < 32 * 12, $"steps {_server.Host.Client.Scheduler.Steps - stepsBefore}");
        ChatFixtures.WaitIdle(_server.Host.Client);
        Assert.AreEqual(8, _server.Host.Client.FreeSlots);
    }

    [TestMethod]
    public async Task CancellingMidStreamFreesTheSequenceCaches()
    {
        var host = _server.Host.Client;
        ChatFixtures.WaitIdle(host);
        int cancelledBefore = host.Scheduler.Cancelled;
        using var cts = new CancellationTokenSource();
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent(ChatServerClient.Body("A very long story", 100, stream: true), System.Text.Encoding.UTF8, "application/json"),
        };
        using var release = new ManualResetEventSlim(false);
        var hold = ChatFixtures.HoldDecodes(host, release);
        try
        {
            using var response = await _client.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token);
            Assert.AreEqual(HttpStatusCode.OK, response.StatusCode);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cts.Token));
            string? line;
            while ((line = await reader.ReadLineAsync(cts.Token)) is not null && !line.StartsWith("data: ", StringComparison.Ordinal)) { }
            Assert.IsNotNull(line, "a first event arrives");
            Assert.AreEqual(1, host.ActiveRequests, "the request holds a KV slot while it streams");
            cts.Cancel();
            response.Dispose();
            // The test host aborts the request (RequestAborted) once the client drops the response.
            ChatFixtures.WaitCancelSeen(host, 1);
        }
        finally
        {
            hold.Dispose();
        }
        ChatFixtures.WaitIdle(host);
        Assert.AreEqual(0, host.ActiveRequests);
        Assert.AreEqual(8, host.FreeSlots, "the cancelled sequence's slot (its KV cache rows) is free again");
        Assert.AreEqual(0, host.Session.Sequences.Count);
        Assert.AreEqual(cancelledBefore + 1, host.Scheduler.Cancelled, "the request was dropped by the disconnect, not run to its end");
    }

    [TestMethod]
    public async Task BadRequestsGetCleanClientErrors()
    {
        using (var r = await _client.PostAsync("{\"model\": \"demo\", \"messages\": [")) await ChatServerClient.AssertErrorAsync(r, HttpStatusCode.BadRequest, "invalid_json");
        using (var r = await _client.PostAsync("[1, 2]")) await ChatServerClient.AssertErrorAsync(r, HttpStatusCode.BadRequest, "invalid_request");
        using (var r = await _client.PostAsync("{\"model\": \"demo\"}")) await ChatServerClient.AssertErrorAsync(r, HttpStatusCode.BadRequest, "invalid_request");
        using (var r = await _client.PostAsync("{\"model\": \"demo\", \"messages\": [{\"role\": \"wizard\", \"content\": \"hi\"}]}")) await ChatServerClient.AssertErrorAsync(r, HttpStatusCode.BadRequest, "invalid_request");
        using (var r = await _client.PostAsync("{\"model\": \"demo\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"temperature\": \"hot\"}")) await ChatServerClient.AssertErrorAsync(r, HttpStatusCode.BadRequest, "invalid_request");
        using (var r = await _client.PostAsync("{\"model\": \"demo\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 0}")) await ChatServerClient.AssertErrorAsync(r, HttpStatusCode.BadRequest, "invalid_request");
        using (var r = await _client.PostAsync(ChatServerClient.Body("hi", 4, model: "gpt-4o"))) await ChatServerClient.AssertErrorAsync(r, HttpStatusCode.NotFound, "model_not_found");
        var longPrompt = string.Join(" ", Enumerable.Repeat("word", 300));
        using (var r = await _client.PostAsync(ChatServerClient.Body(longPrompt, 4))) await ChatServerClient.AssertErrorAsync(r, HttpStatusCode.BadRequest, "context_length_exceeded");
        using (var r = await _client.PostAsync(ChatServerClient.Body(longPrompt, 4, stream: true))) await ChatServerClient.AssertErrorAsync(r, HttpStatusCode.BadRequest, "context_length_exceeded");
        // The official client surfaces them as errors with the status.
        var e = await Assert.ThrowsAsync<System.ClientModel.ClientResultException>(() => _client.OpenAi("gpt-4o").CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.AreEqual(404, e.Status);
        Assert.AreEqual(0, _server.Host.Client.ActiveRequests + _server.Host.Client.QueuedRequests, "refused requests never took a slot");
    }

    [TestMethod]
    public async Task ABurstOverTheKvBudgetIsShedWith429AndAdmittedRequestsComplete()
    {
        using var small = new ChatServerFactory(maxBatch: 2, maxQueue: 2);
        var client = new ChatServerClient(small.CreateClient());
        var prompts = Enumerable.Range(0, 16).Select(ChatFixtures.Prompt).ToArray();
        var alone = new List<string>();
        foreach (var p in prompts) alone.Add(await client.CompleteAsync(p, 40));
        // The loop is held before its decode steps while the burst arrives, so the 2 + 2 admitted requests cannot finish
        // and make room before all 16 are in: exactly 12 must be shed, whatever the machine's speed.
        using var release = new ManualResetEventSlim(false);
        var hold = ChatFixtures.HoldDecodes(small.Host.Client, release);
        var burst = prompts.Select(p => Task.Run(async () =>
        {
            using var r = await client.PostAsync(ChatServerClient.Body(p, 40));
            if (r.StatusCode == HttpStatusCode.TooManyRequests)
            {
                Assert.IsTrue(r.Headers.RetryAfter is not null, "a 429 says when to retry");
                await ChatServerClient.AssertErrorAsync(r, HttpStatusCode.TooManyRequests, "server_busy");
                return (Status: 429, Text: (string?)null);
            }
            var text = await r.Content.ReadAsStringAsync();
            Assert.AreEqual(HttpStatusCode.OK, r.StatusCode, text);
            return (Status: 200, Text: JsonNode.Parse(text)!["choices"]![0]!["message"]!["content"]!.GetValue<string>());
        })).ToArray();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (burst.Count(t => t.IsCompleted) < 12 && DateTime.UtcNow < deadline) await Task.Delay(10);
        Assert.AreEqual(4, small.Host.Client.ActiveRequests + small.Host.Client.QueuedRequests, "2 requests hold the slots and 2 wait");
        hold.Dispose();
        var results = await Task.WhenAll(burst);
        int admitted = results.Count(r => r.Status == 200), shed = results.Count(r => r.Status == 429);
        Assert.AreEqual(12, shed, "16 requests at once on 2 slots + 2 queue places");
        Assert.AreEqual(4, admitted);
        for (int i = 0; i < prompts.Length; i++)
            if (results[i].Status == 200) Assert.AreEqual(alone[i], results[i].Text, $"admitted request {i} lost nothing");
        ChatFixtures.WaitIdle(small.Host.Client);
        Assert.AreEqual(2, small.Host.Client.FreeSlots);
    }
}
