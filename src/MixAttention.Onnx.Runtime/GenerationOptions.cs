namespace MixAttention.Onnx.Runtime;

/// <summary>How tokens are chosen and when generation stops.</summary>
public sealed record GenerationOptions
{
    /// <summary>Tokens to generate at most.</summary>
    public int MaxNewTokens { get; init; } = 64;
    /// <summary>0 = greedy (argmax); otherwise logits are divided by it before sampling.</summary>
    public float Temperature { get; init; }
    /// <summary>Keep the k most likely tokens (0 = all).</summary>
    public int TopK { get; init; }
    /// <summary>Keep the smallest set of tokens whose probability reaches p (1 = all).</summary>
    public float TopP { get; init; } = 1f;
    /// <summary>HF-style repetition penalty over prompt and generated tokens (1 = none).</summary>
    public float RepetitionPenalty { get; init; } = 1f;
    /// <summary>Generation stops after any of these tokens (the stop token is reported).</summary>
    public IReadOnlyCollection<long> StopTokens { get; init; } = Array.Empty<long>();
    /// <summary>Seed of the sampler (null = random).</summary>
    public int? Seed { get; init; }

    internal void Validate()
    {
        if (MaxNewTokens < 1) throw new MixAttentionException($"MaxNewTokens must be >= 1, got {MaxNewTokens}.");
        if (!(Temperature >= 0) || float.IsInfinity(Temperature)) throw new MixAttentionException($"Temperature must be a finite number >= 0, got {Temperature}.");
        if (TopK < 0) throw new MixAttentionException($"TopK must be >= 0, got {TopK}.");
        if (!(TopP > 0 && TopP <= 1)) throw new MixAttentionException($"TopP must be in (0, 1], got {TopP}.");
        if (!(RepetitionPenalty > 0) || float.IsInfinity(RepetitionPenalty)) throw new MixAttentionException($"RepetitionPenalty must be a finite number > 0, got {RepetitionPenalty}.");
    }
}
