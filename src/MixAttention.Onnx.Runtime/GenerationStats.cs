namespace MixAttention.Onnx.Runtime;

/// <summary>Totals of a <see cref="ContinuousBatchingGenerator.Run"/>.</summary>
public sealed record GenerationStats(int PromptTokens, int GeneratedTokens, TimeSpan PrefillTime, TimeSpan DecodeTime, int DecodeSteps)
{
    /// <summary>Generated tokens per second of model time (prefill + decode).</summary>
    public double TokensPerSecond => (PrefillTime + DecodeTime).TotalSeconds is var s && s > 0 ? GeneratedTokens / s : 0;
}
