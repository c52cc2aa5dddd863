using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using MixAttention.Onnx.ChatServer;

namespace MixAttention.Onnx.Tests.Chat;

/// <summary>samples/ChatServer in-process (ASP.NET Core test host) on the chat tests' model, served as "demo".</summary>
/// <param name="modelDir">Another converted model (default: the chat tests' model).</param>
/// <param name="kvBlocks">ChatServer:KvBlocks (paged models).</param>
internal sealed class ChatServerFactory(int maxBatch, int maxQueue, int maxLength = 128, string? modelDir = null, int? kvBlocks = null) : WebApplicationFactory<ChatModelHost>
{
    public static string[] Settings(int maxBatch, int maxQueue, int maxLength, string? modelDir = null, int? kvBlocks = null) =>
    [
        $"ChatServer:Model={modelDir ?? ChatFixtures.ModelDir}",
        $"ChatServer:Tokenizer={ChatFixtures.TokenizerDir}",
        "ChatServer:ModelId=demo",
        $"ChatServer:MaxBatch={maxBatch}",
        $"ChatServer:MaxQueue={maxQueue}",
        $"ChatServer:MaxLength={maxLength}",
        "ChatServer:PrefillChunk=16",
        .. kvBlocks is { } n ? new[] { $"ChatServer:KvBlocks={n}" } : [],
    ];

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        foreach (var setting in Settings(maxBatch, maxQueue, maxLength, modelDir, kvBlocks))
        {
            var (key, value) = (setting[..setting.IndexOf('=')], setting[(setting.IndexOf('=') + 1)..]);
            builder.UseSetting(key, value);
        }
        // Development: the environment that would show developer exception pages; errors must stay clean JSON anyway.
        builder.UseEnvironment("Development");
    }

    public ChatModelHost Host => Services.GetService(typeof(ChatModelHost)) as ChatModelHost ?? throw new InvalidOperationException("no ChatModelHost");
}
