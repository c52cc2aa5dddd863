// OpenAI-compatible chat server over one continuously batched MixAttention session (samples/README.md, docs/serving.md).
//   dotnet run -c Release --project samples/ChatServer -- [MODEL_DIR] [--tokenizer DIR] [--ChatServer:MaxBatch=8] [--urls http://127.0.0.1:5000]
// MODEL_DIR holds model.onnx (converted or not) and, unless --tokenizer names another folder, tokenizer.json and
// tokenizer_config.json. Without it the server converts the bundled GPT-2 demo model (graphs/gpt2-ortattention, native
// layout) and uses the demo tokenizer (graphs/demo).
using MixAttention.Onnx.ChatServer;

var (model, tokenizer, rest) = ServerArguments.Split(args);
var builder = WebApplication.CreateBuilder(rest);
if (model is not null) builder.Configuration["ChatServer:Model"] = model;
if (tokenizer is not null) builder.Configuration["ChatServer:Tokenizer"] = tokenizer;
builder.Services.AddSingleton(sp => ChatServerSettings.From(sp.GetRequiredService<IConfiguration>()));
builder.Services.AddSingleton<ChatModelHost>();

var app = builder.Build();
// Whatever escapes an endpoint becomes a JSON 500 without a stack trace (also in Development).
app.UseExceptionHandler(error => error.Run(context => OpenAiErrors.Write(context, StatusCodes.Status500InternalServerError, "server_error", "internal_error", "the server failed to handle this request.")));
var host = app.Services.GetRequiredService<ChatModelHost>();
app.Logger.LogInformation("serving {Model} ({Slots} slots x {MaxLength} tokens, KV caches {Bytes:N0} bytes preallocated)", host.ModelId, host.Client.Session.Config.MaxBatch, host.Client.Session.Config.MaxLength, host.Client.Session.Memory().AllocatedBytes);

app.MapGet("/v1/models", (ChatModelHost h) => Results.Json(new
{
    @object = "list",
    data = new[] { new { id = h.ModelId, @object = "model", created = h.Created, owned_by = "mixattention" } },
}));
app.MapPost("/v1/chat/completions", ChatCompletionsEndpoint.Handle);
app.Run();
