namespace MixAttention.Onnx.ChatServer;

/// <summary>A request the server refuses before running anything: its status, OpenAI error code and the offending field.</summary>
internal sealed class BadRequestException(int status, string code, string message, string? param = null) : Exception(message)
{
    public int Status { get; } = status;
    public string Code { get; } = code;
    public string? Param { get; } = param;
}
