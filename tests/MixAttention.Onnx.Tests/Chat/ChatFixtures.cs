using MixAttention.Onnx.Chat;
using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Tests.Runtime;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Chat;

/// <summary>The chat tests' model: the GPT-2 demo model (graphs/gpt2-ortattention) converted with the native layout, and the demo tokenizer with its ChatML template.</summary>
internal static class ChatFixtures
{
    /// <summary>Folder of the converted model.onnx.</summary>
    public static string ModelDir => Path.GetDirectoryName(RuntimeFixtures.Convert("gpt2-ortattention"))!;

    /// <summary>The demo tokenizer folder (tokenizer.json, tokenizer_config.json with a chat template).</summary>
    public static string TokenizerDir => Path.Combine(TestPaths.Graphs, "demo");

    public static MixAttentionChatClient OpenClient(int maxBatch, int maxLength = 128, int maxQueued = 16, string modelId = "demo") =>
        MixAttentionChatClient.Open(ModelDir, new SessionConfig { MaxBatch = maxBatch, MaxLength = maxLength, PrefillChunk = 16 },
            new MixAttentionChatClientOptions { ModelId = modelId, MaxQueuedRequests = maxQueued, DefaultTemperature = 0 }, TokenizerDir);

    /// <summary>Distinct short prompts (different lengths, so batched rows sit at different positions).</summary>
    public static string Prompt(int i) => $"Request {i}: tell me about {new string('a', i % 5 + 1)} story number {i * 7 % 13}.";

    /// <summary>
    /// Holds the client's decode loop before each decode step until <paramref name="release"/> is set, so a test can
    /// cancel a request mid-stream before the tiny model finishes it (it makes ~100 tokens in well under a second).
    /// </summary>
    public static IDisposable HoldDecodes(MixAttentionChatClient client, ManualResetEventSlim release)
    {
        client.Scheduler.BeforeDecode = () => release.Wait(TimeSpan.FromSeconds(20));
        return new Release(() => { client.Scheduler.BeforeDecode = null; release.Set(); });
    }

    /// <summary>Waits (up to 10 s) until the held loop sees <paramref name="count"/> cancelled requests.</summary>
    public static void WaitCancelSeen(MixAttentionChatClient client, int count)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (client.Scheduler.CancelRequestedWhileHeld < count && DateTime.UtcNow < deadline) Thread.Sleep(5);
        Assert.AreEqual(count, client.Scheduler.CancelRequestedWhileHeld, "the cancellation reached the request");
    }

    private sealed class Release(Action action) : IDisposable
    {
        public void Dispose() => action();
    }

    /// <summary>Waits (up to 10 s) until the client holds no request and every slot is free again.</summary>
    public static void WaitIdle(MixAttentionChatClient client)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while ((client.ActiveRequests > 0 || client.QueuedRequests > 0 || client.FreeSlots < client.Session.Config.MaxBatch) && DateTime.UtcNow < deadline) Thread.Sleep(10);
    }
}
