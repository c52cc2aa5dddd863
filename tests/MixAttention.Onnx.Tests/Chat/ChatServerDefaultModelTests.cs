using System.Net;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using MixAttention.Onnx.ChatServer;

namespace MixAttention.Onnx.Tests.Chat;

/// <summary>samples/ChatServer started without a model folder: it converts the bundled demo model and serves it with the demo tokenizer's chat template.</summary>
[TestClass]
public sealed class ChatServerDefaultModelTests
{
    private sealed class DefaultFactory : WebApplicationFactory<ChatModelHost>
    {
        protected override void ConfigureWebHost(IWebHostBuilder builder) => builder.UseSetting("ChatServer:MaxBatch", "2");
    }

    [TestMethod]
    public async Task WithoutAModelFolderTheServerServesTheBundledDemoModel()
    {
        using var factory = new DefaultFactory();
        var client = new ChatServerClient(factory.CreateClient());
        var models = JsonNode.Parse(await client.Http.GetStringAsync("/v1/models"))!;
        Assert.AreEqual("mixattention-demo", models["data"]![0]!["id"]!.GetValue<string>());
        var host = (ChatModelHost)factory.Services.GetService(typeof(ChatModelHost))!;
        Assert.IsNotNull(host.Client.Template.Source, "the demo tokenizer's ChatML template is used");
        Assert.AreEqual(512, host.Client.Session.Config.MaxLength, "the context length comes from the demo model's genai_config.json");
        Assert.IsTrue(host.Client.Session.Model.IsInPlace, "the demo model was converted (preallocated in-place caches)");
        using var response = await client.PostAsync(ChatServerClient.Body("Hello", 8, model: "mixattention-demo"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.AreEqual(HttpStatusCode.OK, response.StatusCode, text);
        var usage = JsonNode.Parse(text)!["usage"]!;
        Assert.AreEqual(8, usage["completion_tokens"]!.GetValue<int>());
        var messages = new List<Microsoft.Extensions.AI.ChatMessage> { new(Microsoft.Extensions.AI.ChatRole.User, "Hello") };
        Assert.AreEqual(host.Client.Tokenizer.Encode(host.Client.Template.Render(messages)).Length, usage["prompt_tokens"]!.GetValue<int>());
    }
}
