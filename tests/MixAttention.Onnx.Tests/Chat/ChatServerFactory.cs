using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using MixAttention.Onnx.ChatServer;

namespace MixAttention.Onnx.Tests.Chat;

/// <summary>samples/ChatServer in-process (ASP.NET Core test host) on the chat tests' model, served as "demo".</summary>
internal sealed class ChatServerFactory(int maxBatch, int maxQueue, int maxLength = 128) : WebApplicationFactory<ChatModelHost>
{
    public static string[] Settings(int maxBatch, int maxQueue, int maxLength) =>
    [
        $"ChatServer:Model={ChatFixtures.ModelDir}",
        $"ChatServer:Tokenizer={ChatFixtures.TokenizerDir}",
        "ChatServer:ModelId=demo",
        $"ChatServer:MaxBatch={maxBatch}",
        $"ChatServer:MaxQueue={maxQueue}",
        $"ChatServer:MaxLength={maxLength}",
        "ChatServer:PrefillChunk=16",
    ];

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        foreach (var setting in Settings(maxBatch, maxQueue, maxLength))
        {
            var (key, value) = (setting[..setting.IndexOf('=')], setting[(setting.IndexOf('=') + 1)..]);
            builder.UseSetting(key, value);
        }
        // Development: the environment that would show developer exception pages; errors must stay clean JSON anyway.
        builder.UseEnvironment("Development");
    }

    public ChatModelHost Host => Services.GetService(typeof(ChatModelHost)) as ChatModelHost ?? throw new InvalidOperationException("no ChatModelHost");
}
