// MixAttention.Onnx.Chat quick start: convert a model, open it as an IChatClient, ask once, then stream the same answer.
// dotnet run -- MODEL.onnx TOKENIZER_DIR [OUT_DIR]   (samples/README.md; tools/package-smoke.sh runs it on the demo model)
using Microsoft.Extensions.AI;
using MixAttention.Onnx.Chat;
using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Runtime;

var source = args.Length > 0 ? args[0] : "graphs/gpt2-ortattention/model.onnx";
var tokenizerDir = args.Length > 1 ? args[1] : "graphs/demo";
var outDir = args.Length > 2 ? args[2] : Path.Combine(Path.GetTempPath(), "mixattn-chatclient");

// 1. Convert (native layout: the model's own windows, exact) into a folder the chat client opens.
Converter.Convert(source, Path.Combine(outDir, "model.onnx"), new ConversionOptions { Layout = "native", Force = true });

// 2. One session of 4 sequences behind the client; concurrent calls are decoded together (continuous batching).
//    The tokenizer and the chat template (tokenizer_config.json) come from the tokenizer folder.
using IChatClient client = MixAttentionChatClient.Open(outDir, new SessionConfig { MaxBatch = 4, MaxLength = 256, PrefillChunk = 32 },
    new MixAttentionChatClientOptions { ModelId = "mixattention-demo" }, tokenizerDir);

// 3. Ask once (greedy, so the streamed answer below is the same text).
List<ChatMessage> chat = [new(ChatRole.System, "You are a helpful assistant."), new(ChatRole.User, "Tell me a story.")];
var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 16 };
var response = await client.GetResponseAsync(chat, options);
Console.WriteLine($"reply: {response.Text}");
Console.WriteLine($"usage: {response.Usage?.InputTokenCount} prompt tokens, {response.Usage?.OutputTokenCount} completion tokens, finish {response.FinishReason}");

// 4. Stream it.
var streamed = new System.Text.StringBuilder();
await foreach (var update in client.GetStreamingResponseAsync(chat, options))
{
    Console.Write(update.Text);
    streamed.Append(update.Text);
}
Console.WriteLine();
Console.WriteLine(streamed.ToString() == response.Text ? "streamed: same text" : "streamed: DIFFERENT text");
