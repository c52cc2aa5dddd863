using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;
using MixAttention.Onnx.Chat;

namespace MixAttention.Onnx.ChatServer;

/// <summary>
/// <c>POST /v1/chat/completions</c>: parses the body itself (so malformed JSON is a clean 400), asks the chat client,
/// and answers one JSON completion or, with <c>"stream": true</c>, server-sent events of completion chunks ending in
/// <c>data: [DONE]</c>. Every refusal happens before the first byte: 400 (bad field, context too long), 404 (unknown
/// model), 429 (all KV slots busy and the queue full). A client that disconnects cancels its request, which frees its slot.
/// </summary>
internal static class ChatCompletionsEndpoint
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public static async Task Handle(HttpContext context, ChatModelHost host)
    {
        var aborted = context.RequestAborted;
        IAsyncEnumerable<ChatResponseUpdate> updates;
        ChatCompletionRequest request;
        try
        {
            JsonDocument doc;
            try
            {
                doc = await JsonDocument.ParseAsync(context.Request.Body, new JsonDocumentOptions { MaxDepth = 32 }, aborted);
            }
            catch (JsonException e)
            {
                throw new BadRequestException(StatusCodes.Status400BadRequest, "invalid_json", $"the request body is not valid JSON: {e.Message}");
            }
            using (doc) request = ChatCompletionRequest.Parse(doc.RootElement);
            if (request.Model != host.ModelId)
                throw new BadRequestException(StatusCodes.Status404NotFound, "model_not_found", $"the model '{request.Model}' does not exist; this server serves '{host.ModelId}' (GET /v1/models).", "model");
            updates = host.Client.GetStreamingResponseAsync(request.Messages, request.Options, aborted);
        }
        catch (BadRequestException e)
        {
            await OpenAiErrors.Write(context, e.Status, "invalid_request_error", e.Code, e.Message, e.Param);
            return;
        }
        catch (ContextLengthExceededException e)
        {
            await OpenAiErrors.Write(context, StatusCodes.Status400BadRequest, "invalid_request_error", "context_length_exceeded", e.Message, "messages");
            return;
        }
        catch (ChatCapacityException e)
        {
            await OpenAiErrors.Write(context, StatusCodes.Status429TooManyRequests, "rate_limit_error", "server_busy", e.Message);
            return;
        }
        catch (MixAttentionException e)
        {
            await OpenAiErrors.Write(context, StatusCodes.Status400BadRequest, "invalid_request_error", "invalid_request", e.Message);
            return;
        }

        var id = "chatcmpl-" + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        try
        {
            if (request.Stream) await Stream(context, host, request, updates, id, created, aborted);
            else await Complete(context, host, updates, id, created, aborted);
        }
        catch (OperationCanceledException) when (aborted.IsCancellationRequested)
        {
            // The client went away; the chat client already gave the slot back.
        }
        catch (Exception e) when (e is MixAttentionException or ObjectDisposedException)
        {
            if (!context.Response.HasStarted)
                await OpenAiErrors.Write(context, StatusCodes.Status503ServiceUnavailable, "server_error", "generation_failed", $"generation failed: {e.Message}");
            else
                await WriteEvent(context, OpenAiErrors.Body("server_error", "generation_failed", $"generation failed: {e.Message}"), aborted);
        }
    }

    private static async Task Complete(HttpContext context, ChatModelHost host, IAsyncEnumerable<ChatResponseUpdate> updates, string id, long created, CancellationToken aborted)
    {
        var text = new StringBuilder();
        ChatFinishReason? finish = null;
        UsageDetails? usage = null;
        await foreach (var u in updates.WithCancellation(aborted))
        {
            text.Append(u.Text);
            finish = u.FinishReason ?? finish;
            usage = u.Contents.OfType<UsageContent>().FirstOrDefault()?.Details ?? usage;
        }
        await context.Response.WriteAsJsonAsync(new
        {
            id,
            @object = "chat.completion",
            created,
            model = host.ModelId,
            choices = new[] { new { index = 0, message = new { role = "assistant", content = text.ToString() }, finish_reason = Reason(finish) } },
            usage = Usage(usage),
        }, Json, aborted);
    }

    private static async Task Stream(HttpContext context, ChatModelHost host, ChatCompletionRequest request, IAsyncEnumerable<ChatResponseUpdate> updates, string id, long created, CancellationToken aborted)
    {
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        bool first = true;
        UsageDetails? usage = null;
        await foreach (var u in updates.WithCancellation(aborted))
        {
            usage = u.Contents.OfType<UsageContent>().FirstOrDefault()?.Details ?? usage;
            var delta = first ? (object)new { role = "assistant", content = u.Text } : new { content = u.Text };
            first = false;
            await WriteEvent(context, new
            {
                id,
                @object = "chat.completion.chunk",
                created,
                model = host.ModelId,
                choices = new[] { new { index = 0, delta, finish_reason = Reason(u.FinishReason) } },
            }, aborted);
        }
        if (request.IncludeUsage)
            await WriteEvent(context, new { id, @object = "chat.completion.chunk", created, model = host.ModelId, choices = Array.Empty<object>(), usage = Usage(usage) }, aborted);
        await context.Response.WriteAsync("data: [DONE]\n\n", aborted);
        await context.Response.Body.FlushAsync(aborted);
    }

    private static async Task WriteEvent(HttpContext context, object payload, CancellationToken aborted)
    {
        await context.Response.WriteAsync("data: " + JsonSerializer.Serialize(payload, Json) + "\n\n", aborted);
        await context.Response.Body.FlushAsync(aborted);
    }

    private static string? Reason(ChatFinishReason? finish) =>
        finish is null ? null : finish == ChatFinishReason.Length ? "length" : "stop";

    private static object Usage(UsageDetails? usage) => new
    {
        prompt_tokens = usage?.InputTokenCount ?? 0,
        completion_tokens = usage?.OutputTokenCount ?? 0,
        total_tokens = usage?.TotalTokenCount ?? 0,
    };
}
