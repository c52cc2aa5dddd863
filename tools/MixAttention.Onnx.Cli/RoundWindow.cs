namespace MixAttention.Onnx.Cli;

/// <summary>The wall-clock interval (UTC) of one timed round's steps.</summary>
internal sealed record RoundWindow(DateTime StartUtc, DateTime EndUtc);
