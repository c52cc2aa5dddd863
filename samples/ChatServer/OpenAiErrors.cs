namespace MixAttention.Onnx.ChatServer;

/// <summary>Errors in OpenAI's shape: <c>{"error": {"message", "type", "param", "code"}}</c>; never a stack trace.</summary>
internal static class OpenAiErrors
{
    public static Task Write(HttpContext context, int status, string type, string code, string message, string? param = null)
    {
        if (context.Response.HasStarted) return Task.CompletedTask;
        context.Response.Clear();
        context.Response.StatusCode = status;
        if (status == StatusCodes.Status429TooManyRequests) context.Response.Headers.RetryAfter = "1";
        return context.Response.WriteAsJsonAsync(Body(type, code, message, param));
    }

    public static object Body(string type, string code, string message, string? param = null) =>
        new { error = new { message, type, param, code } };
}
