using Microsoft.Extensions.AI;
using MixAttention.Onnx.Chat;
using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Chat;

/// <summary>
/// <see cref="MixAttentionChatClient"/> on paged caches with a pool smaller than its slots' demand (issue 19): concurrent
/// greedy calls still equal the same calls alone on contiguous caches, while the decode loop starts requests by free
/// blocks, preempts and resumes them (swapped to host memory: a CPU session), and stores a shared system prompt once.
/// </summary>
[TestClass]
public sealed class PagedChatTests
{
    private const int BlockSize = 4;

    private static readonly Lazy<string> PagedModelDir = new(() =>
    {
        var dir = TestPaths.TempDir();
        Converter.Convert(TestPaths.Fixture("gpt2-ortattention"), Path.Combine(dir, "model.onnx"),
            new ConversionOptions { Layout = "native", Backend = "ops", PagedBlockSize = BlockSize });
        return dir;
    });

    private static MixAttentionChatClient OpenPaged(int kvBlocks) =>
        MixAttentionChatClient.Open(PagedModelDir.Value, new SessionConfig { MaxBatch = 4, MaxLength = 128, PrefillChunk = 16, KvBlocks = kvBlocks },
            new MixAttentionChatClientOptions { ModelId = "demo", MaxQueuedRequests = 16, DefaultTemperature = 0 }, ChatFixtures.TokenizerDir);

    private static ChatOptions Greedy(int maxTokens) => new() { Temperature = 0, MaxOutputTokens = maxTokens };

    private static async Task<List<string>> SoloOnContiguous(IEnumerable<List<ChatMessage>> conversations, int maxTokens)
    {
        using var contiguous = ChatFixtures.OpenClient(maxBatch: 1);
        var texts = new List<string>();
        foreach (var c in conversations) texts.Add((await contiguous.GetResponseAsync(c, Greedy(maxTokens))).Text);
        return texts;
    }

    [TestMethod]
    public async Task ConcurrentCallsOnATightPoolEqualSoloCallsAndArePreempted()
    {
        var conversations = Enumerable.Range(0, 8).Select(i => new List<ChatMessage> { new(ChatRole.User, ChatFixtures.Prompt(i)) }).ToList();
        var solo = await SoloOnContiguous(conversations, 24);
        // A rendered prompt is about 80 tokens: each call ends near 100 positions (about 26 blocks of 4), so four slots
        // would need about 104 blocks; the pool has 60.
        using var client = OpenPaged(kvBlocks: 60);
        var together = await Task.WhenAll(conversations.Select(c => Task.Run(() => client.GetResponseAsync(c, Greedy(24)))));
        CollectionAssert.AreEqual(solo, together.Select(r => r.Text).ToList());
        Assert.IsGreaterThan(0, client.Scheduler.Preemptions, "the pool cannot hold four calls at their full length");
        Assert.IsGreaterThan(1, client.Scheduler.MaxStepBatch);
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while ((client.ActiveRequests > 0 || client.QueuedRequests > 0) && DateTime.UtcNow < deadline) Thread.Sleep(10);
        Assert.AreEqual(0, client.ActiveRequests);
        // What stays is the prefix cache: parked prompt prefixes (a slot and their blocks each), evicted when needed.
        Assert.IsLessThanOrEqualTo(BlockScheduler.DefaultRetainedPrefixes, client.Session.Sequences.Count);
    }

    [TestMethod]
    public async Task TheServerServesAPagedModelFromItsKvBlocksSetting()
    {
        var prompts = Enumerable.Range(0, 8).Select(ChatFixtures.Prompt).ToArray();
        var solo = await SoloOnContiguous(prompts.Select(p => new List<ChatMessage> { new(ChatRole.User, p) }), 24);
        using var server = new ChatServerFactory(maxBatch: 4, maxQueue: 16, modelDir: PagedModelDir.Value, kvBlocks: 60);
        var client = new ChatServerClient(server.CreateClient());
        var session = (InPlaceCacheSession)server.Host.Client.Session;
        Assert.AreEqual(60, session.Caches.TotalBlocks, "ChatServer:KvBlocks sizes the pool");
        var texts = await Task.WhenAll(prompts.Select(p => Task.Run(() => client.CompleteAsync(p, 24))));
        CollectionAssert.AreEqual(solo, texts);
        Assert.IsGreaterThan(0, server.Host.Client.Scheduler.Preemptions);
    }

    [TestMethod]
    public async Task ASharedSystemPromptIsReused()
    {
        const string system = "You are a careful assistant for the story archive. Answer briefly and name the story number you use.";
        var conversations = Enumerable.Range(0, 6).Select(i => new List<ChatMessage> { new(ChatRole.System, system), new(ChatRole.User, ChatFixtures.Prompt(i)) }).ToList();
        var solo = await SoloOnContiguous(conversations, 12);
        using var client = OpenPaged(kvBlocks: 120);
        // One call first, so that the others find its system-prompt blocks cached while it runs or retained after it.
        var first = await client.GetResponseAsync(conversations[0], Greedy(12));
        var rest = await Task.WhenAll(conversations.Skip(1).Select(c => Task.Run(() => client.GetResponseAsync(c, Greedy(12)))));
        CollectionAssert.AreEqual(solo, new[] { first.Text }.Concat(rest.Select(r => r.Text)).ToList());
        Assert.IsGreaterThan(0, client.Scheduler.ReusedTokens, "later calls fork the system prompt's cached blocks");
    }
}
