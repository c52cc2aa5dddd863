using MixAttention.Onnx.Runtime;

namespace MixAttention.Onnx.Chat;

/// <summary>Reply text produced by one step for one request; the last chunk carries the finish reason.</summary>
internal readonly record struct ChatChunk(string Text, int OutputTokens, FinishReason? Finish);
