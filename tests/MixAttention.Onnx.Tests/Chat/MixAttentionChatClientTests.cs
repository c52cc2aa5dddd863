using Microsoft.Extensions.AI;
using MixAttention.Onnx.Chat;
using MixAttention.Onnx.Runtime;

namespace MixAttention.Onnx.Tests.Chat;

/// <summary>
/// <see cref="MixAttentionChatClient"/> on the converted demo model: streamed and whole replies agree, stop sequences,
/// options, usage, cancellation (the slot comes back), concurrency (batched replies equal solo ones) and capacity.
/// </summary>
[TestClass]
public sealed class MixAttentionChatClientTests
{
    private static MixAttentionChatClient _client = null!;

    [ClassInitialize]
    public static void Open(TestContext _) => _client = ChatFixtures.OpenClient(maxBatch: 4);

    [ClassCleanup]
    public static void Close() => _client.Dispose();

    private static List<ChatMessage> Ask(string text) => [new(ChatRole.User, text)];

    private static ChatOptions Greedy(int maxTokens, params string[] stop) => new() { Temperature = 0, MaxOutputTokens = maxTokens, StopSequences = stop.Length > 0 ? stop : null };

    private static async Task<(string Text, ChatFinishReason? Finish, UsageDetails? Usage, int Updates)> StreamAsync(IChatClient client, List<ChatMessage> messages, ChatOptions options, CancellationToken ct = default)
    {
        var text = new System.Text.StringBuilder();
        ChatFinishReason? finish = null;
        UsageDetails? usage = null;
        int n = 0;
        await foreach (var u in client.GetStreamingResponseAsync(messages, options, ct))
        {
            n++;
            text.Append(u.Text);
            finish ??= u.FinishReason;
            usage ??= u.Contents.OfType<UsageContent>().FirstOrDefault()?.Details;
        }
        return (text.ToString(), finish, usage, n);
    }

    [TestMethod]
    public async Task StreamedTextEqualsTheWholeResponse()
    {
        var messages = Ask("Once upon a time");
        var whole = await _client.GetResponseAsync(messages, Greedy(24));
        var streamed = await StreamAsync(_client, messages, Greedy(24));
        Assert.IsTrue(whole.Text.Length > 0);
        Assert.AreEqual(whole.Text, streamed.Text);
        Assert.IsTrue(streamed.Updates > 1, "the reply should come in several updates");
        Assert.AreEqual(ChatFinishReason.Length, whole.FinishReason);
        Assert.AreEqual(whole.Usage!.OutputTokenCount, streamed.Usage!.OutputTokenCount);
        Assert.AreEqual("demo", whole.ModelId);
    }

    [TestMethod]
    public async Task UsageCountsTheRenderedPromptAndTheReplyTokens()
    {
        var messages = new List<ChatMessage> { new(ChatRole.System, "Be brief."), new(ChatRole.User, "What is a cache?") };
        var response = await _client.GetResponseAsync(messages, Greedy(17));
        int promptTokens = _client.Tokenizer.Encode(_client.Template.Render(messages)).Length;
        Assert.IsTrue(promptTokens > 20, $"the ChatML prompt should be long, got {promptTokens} tokens");
        Assert.AreEqual(promptTokens, response.Usage!.InputTokenCount);
        Assert.AreEqual(17, response.Usage.OutputTokenCount);
        Assert.AreEqual(promptTokens + 17, response.Usage.TotalTokenCount);
        // The reply is the text of exactly those 17 tokens (the demo vocabulary has no end-of-sequence token).
        var again = await _client.GetResponseAsync(messages, Greedy(17));
        Assert.AreEqual(response.Text, again.Text);
    }

    [TestMethod]
    public async Task StopSequencesEndTheReplyBeforeThem()
    {
        var messages = Ask("The weather today");
        var full = (await _client.GetResponseAsync(messages, Greedy(40))).Text;
        Assert.IsTrue(full.Length > 12, full);
        var stop = full.Substring(full.Length / 2, 3);
        int at = full.IndexOf(stop, StringComparison.Ordinal);
        var whole = await _client.GetResponseAsync(messages, Greedy(40, stop, "no such text anywhere"));
        Assert.AreEqual(full[..at], whole.Text);
        Assert.AreEqual(ChatFinishReason.Stop, whole.FinishReason);
        Assert.IsTrue(whole.Usage!.OutputTokenCount < 40);
        var streamed = await StreamAsync(_client, messages, Greedy(40, stop, "no such text anywhere"));
        Assert.AreEqual(full[..at], streamed.Text, "text that could start a stop sequence is held back, so the stream never shows it");
        Assert.AreEqual(ChatFinishReason.Stop, streamed.Finish);
    }

    [TestMethod]
    public async Task SeededSamplingRepeatsAndOptionsAreChecked()
    {
        var messages = Ask("Random words");
        var options = new ChatOptions { Temperature = 1.2f, TopP = 0.9f, Seed = 1234, MaxOutputTokens = 20 };
        var a = await _client.GetResponseAsync(messages, options);
        var b = await _client.GetResponseAsync(messages, options);
        Assert.AreEqual(a.Text, b.Text);
        var greedy = await _client.GetResponseAsync(messages, Greedy(20));
        Assert.AreNotEqual(greedy.Text, a.Text, "temperature 1.2 should leave the greedy path on random weights");
        Assert.ThrowsExactly<MixAttentionException>(() => _client.GetStreamingResponseAsync(messages, new ChatOptions { Temperature = -1 }));
        Assert.ThrowsExactly<MixAttentionException>(() => _client.GetStreamingResponseAsync(messages, new ChatOptions { TopP = 0 }));
        Assert.ThrowsExactly<MixAttentionException>(() => _client.GetStreamingResponseAsync(messages, new ChatOptions { MaxOutputTokens = 0 }));
    }

    [TestMethod]
    public void APromptOverTheContextIsRefusedBeforeItRuns()
    {
        var e = Assert.ThrowsExactly<ContextLengthExceededException>(() => _client.GetStreamingResponseAsync(Ask(string.Join(" ", Enumerable.Repeat("word", 200)))));
        Assert.AreEqual(128, e.MaxLength);
        Assert.IsTrue(e.PromptTokens >= 128);
        Assert.AreEqual(0, _client.ActiveRequests + _client.QueuedRequests);
    }

    [TestMethod]
    public async Task CancellingMidStreamFreesTheSequenceSlot()
    {
        ChatFixtures.WaitIdle(_client);
        int cancelledBefore = _client.Scheduler.Cancelled;
        using var cts = new CancellationTokenSource();
        using var release = new ManualResetEventSlim(false);
        var hold = ChatFixtures.HoldDecodes(_client, release);
        int updates = 0;
        await Assert.ThrowsAsync<OperationCanceledException>(async () =>
        {
            await foreach (var u in _client.GetStreamingResponseAsync(Ask("A long story"), Greedy(100), cts.Token))
            {
                if (++updates == 1)
                {
                    Assert.AreEqual(1, _client.ActiveRequests, "the call holds a slot while it streams");
                    cts.Cancel();
                    ChatFixtures.WaitCancelSeen(_client, 1);
                    hold.Dispose();
                }
            }
        });
        ChatFixtures.WaitIdle(_client);
        Assert.AreEqual(0, _client.ActiveRequests);
        Assert.AreEqual(4, _client.FreeSlots);
        Assert.AreEqual(0, _client.Session.Sequences.Count, "the cancelled sequence was removed from the session");
        Assert.AreEqual(cancelledBefore + 1, _client.Scheduler.Cancelled);
        hold.Dispose();
        // Leaving a stream early (break) gives the slot back too.
        using var release2 = new ManualResetEventSlim(false);
        using (ChatFixtures.HoldDecodes(_client, release2))
            await foreach (var _ in _client.GetStreamingResponseAsync(Ask("Another story"), Greedy(100))) break;
        ChatFixtures.WaitIdle(_client);
        Assert.AreEqual(4, _client.FreeSlots);
        Assert.AreEqual(0, _client.Session.Sequences.Count);
        Assert.AreEqual(cancelledBefore + 2, _client.Scheduler.Cancelled);
    }

    [TestMethod]
    public async Task ConcurrentCallsShareOneBatchedSessionAndEqualSoloCalls()
    {
        var prompts = Enumerable.Range(0, 10).Select(ChatFixtures.Prompt).ToArray();
        var solo = new List<string>();
        foreach (var p in prompts) solo.Add((await _client.GetResponseAsync(Ask(p), Greedy(16))).Text);
        var maxBefore = _client.Scheduler.MaxStepBatch;
        var together = await Task.WhenAll(prompts.Select(p => Task.Run(() => _client.GetResponseAsync(Ask(p), Greedy(16)))));
        CollectionAssert.AreEqual(solo, together.Select(r => r.Text).ToList());
        Assert.IsTrue(_client.Scheduler.MaxStepBatch > 1, $"decode steps should carry several requests (max {_client.Scheduler.MaxStepBatch}, before {maxBefore})");
        ChatFixtures.WaitIdle(_client);
        Assert.AreEqual(4, _client.FreeSlots);
    }

    [TestMethod]
    public async Task AFullSessionAndQueueRefuseMoreCalls()
    {
        using var client = ChatFixtures.OpenClient(maxBatch: 1, maxQueued: 1);
        using var cts = new CancellationTokenSource();
        // Held before each decode step, so the first call cannot finish (and free its slot) before the third is asked.
        using var release = new ManualResetEventSlim(false);
        var hold = ChatFixtures.HoldDecodes(client, release);
        var first = client.GetStreamingResponseAsync(Ask("first"), Greedy(100), cts.Token).GetAsyncEnumerator();
        Assert.IsTrue(await first.MoveNextAsync());
        var second = client.GetStreamingResponseAsync(Ask("second"), Greedy(100), cts.Token);
        var e = Assert.ThrowsExactly<ChatCapacityException>(() => client.GetStreamingResponseAsync(Ask("third"), Greedy(4)));
        Assert.AreEqual(1, e.Slots);
        Assert.AreEqual(1, e.Queued);
        cts.Cancel();
        hold.Dispose();
        await first.DisposeAsync();
        await Assert.ThrowsAsync<OperationCanceledException>(async () => { await foreach (var _ in second) { } });
        ChatFixtures.WaitIdle(client);
        var after = await client.GetResponseAsync(Ask("third"), Greedy(4));
        Assert.AreEqual(4, after.Usage!.OutputTokenCount, "once the slot is free the next call runs");
    }
}
