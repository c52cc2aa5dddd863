using MixAttention.Onnx.Runtime;

namespace MixAttention.Onnx.Cli;

/// <param name="RoundMs">ms per step of each timed round (one entry without --rounds).</param>
/// <param name="Speedup">the median of the per-round ratios against the first model (--rounds), else null.</param>
/// <param name="RoundPositions">the model's place in the timing order of each round (0 = timed first).</param>
/// <param name="Gc">what the garbage collector did inside each timed round.</param>
/// <param name="GraphPhases">CUDA-graph models: host ms per step by phase in each timed round (empty otherwise).</param>
/// <param name="Windows">when each timed round ran (UTC), to line rounds up with a log of the card's clocks and temperature.</param>
internal sealed record BenchResult(string Path, int Context, int Batch, double MsPerStep, IReadOnlyList<double> RoundMs, IReadOnlyList<int> RoundPositions, double? Speedup,
    double TokensPerSecond, double PrefillTokensPerSecond, SessionKvMemory Memory, bool CudaGraph, string? GraphTransfer, double? GraphMaxAbsDiff,
    bool LogitsOnDevice, IReadOnlyList<GcRound> Gc, IReadOnlyList<GraphPhases> GraphPhases, IReadOnlyList<RoundWindow> Windows);
