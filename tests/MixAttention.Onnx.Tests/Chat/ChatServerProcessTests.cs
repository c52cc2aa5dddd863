using System.Diagnostics;
using System.Net;
using System.Text.RegularExpressions;
using MixAttention.Onnx.Tests.Support;
using OpenAI.Chat;

namespace MixAttention.Onnx.Tests.Chat;

/// <summary>
/// samples/ChatServer as a real process (<c>dotnet ChatServer.dll MODEL_DIR --urls http://127.0.0.1:0</c>) on a
/// loopback port: the OpenAI client and raw HTTP over a real socket, concurrent requests against the same prompts
/// alone, a client that disconnects mid-stream, and clean 4xx.
/// </summary>
[TestClass]
public sealed class ChatServerProcessTests
{
    [TestMethod]
    [TestCategory("Slow")]
    public async Task TheServerProcessAnswersOverLoopback()
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "ChatServer.dll");
        Assert.IsTrue(File.Exists(dll) && File.Exists(Path.Combine(AppContext.BaseDirectory, "ChatServer.runtimeconfig.json")), "the sample is built next to the tests");
        var settings = ChatServerFactory.Settings(maxBatch: 4, maxQueue: 16, maxLength: 128).Where(s => !s.StartsWith("ChatServer:Model=", StringComparison.Ordinal) && !s.StartsWith("ChatServer:Tokenizer=", StringComparison.Ordinal));
        var start = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = TestPaths.TempDir(),
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // As a user types it: the model folder first, then --tokenizer and ASP.NET Core's own options.
        foreach (var a in new[] { dll, ChatFixtures.ModelDir, "--tokenizer", ChatFixtures.TokenizerDir, "--urls", "http://127.0.0.1:0" }.Concat(settings.Select(s => "--" + s)))
            start.ArgumentList.Add(a);
        start.Environment["ASPNETCORE_ENVIRONMENT"] = "Production";
        using var process = Process.Start(start)!;
        var log = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var listening = new TaskCompletionSource<Uri>(TaskCreationOptions.RunContinuationsAsynchronously);
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            log.Enqueue(e.Data);
            if (Regex.Match(e.Data, @"Now listening on: (http://127\.0\.0\.1:\d+)") is { Success: true } m) listening.TrySetResult(new Uri(m.Groups[1].Value));
        };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) log.Enqueue(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            var done = await Task.WhenAny(listening.Task, Task.Delay(TimeSpan.FromSeconds(90)), process.WaitForExitAsync());
            Assert.IsTrue(done == listening.Task, "the server did not start:\n" + string.Join("\n", log));
            using var http = new HttpClient { BaseAddress = await listening.Task, Timeout = TimeSpan.FromSeconds(60) };
            var client = new ChatServerClient(http);

            // Official client, whole and streamed.
            var chat = client.OpenAi();
            var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 16 };
            var whole = (await chat.CompleteChatAsync([new UserChatMessage("Hello over a socket")], options)).Value;
            var streamed = new System.Text.StringBuilder();
            await foreach (var u in chat.CompleteChatStreamingAsync([new UserChatMessage("Hello over a socket")], options))
                foreach (var part in u.ContentUpdate) streamed.Append(part.Text);
            Assert.IsTrue(whole.Content[0].Text.Length > 0);
            Assert.AreEqual(whole.Content[0].Text, streamed.ToString());
            Assert.AreEqual(16, whole.Usage.OutputTokenCount);

            // Concurrent raw requests equal the same prompts alone.
            var prompts = Enumerable.Range(0, 12).Select(ChatFixtures.Prompt).ToArray();
            var alone = new List<string>();
            foreach (var p in prompts) alone.Add(await client.CompleteAsync(p, 10));
            var together = await Task.WhenAll(prompts.Select(p => client.CompleteAsync(p, 10)));
            CollectionAssert.AreEqual(alone, together);

            // A client that disconnects mid-stream: the server keeps serving (its slot comes back; the in-process test
            // reads the slot accounting), and the next 12 requests fit beside it (4 slots + 16 queue places) while the server notices the disconnect.
            using (var cts = new CancellationTokenSource())
            {
                var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(ChatServerClient.Body("Long", 100, stream: true), System.Text.Encoding.UTF8, "application/json") };
                using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token);
                using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cts.Token));
                Assert.IsTrue((await reader.ReadLineAsync(cts.Token))?.StartsWith("data: ", StringComparison.Ordinal));
                cts.Cancel();
            }
            var again = await Task.WhenAll(prompts.Select(p => client.CompleteAsync(p, 10)));
            CollectionAssert.AreEqual(alone, again);

            // Clean 4xx over the wire.
            using (var r = await client.PostAsync("{not json")) await ChatServerClient.AssertErrorAsync(r, HttpStatusCode.BadRequest, "invalid_json");
            using (var r = await client.PostAsync(ChatServerClient.Body("hi", 4, model: "nope"))) await ChatServerClient.AssertErrorAsync(r, HttpStatusCode.NotFound, "model_not_found");
            using (var r = await client.PostAsync(ChatServerClient.Body(string.Join(" ", Enumerable.Repeat("word", 300)), 4))) await ChatServerClient.AssertErrorAsync(r, HttpStatusCode.BadRequest, "context_length_exceeded");
            Assert.IsFalse(process.HasExited);
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
        }
    }
}
