namespace MixAttention.Onnx.Cli;

/// <summary>
/// .NET's garbage collector inside one timed round: collections that reached each generation (a gen-2 collection
/// counts in all three), time the process was paused for them, and bytes the timing thread allocated per step.
/// </summary>
internal sealed record GcRound(int Gen0, int Gen1, int Gen2, double PauseMs, long AllocatedBytesPerStep);
