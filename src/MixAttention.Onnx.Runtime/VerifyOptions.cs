namespace MixAttention.Onnx.Runtime;

/// <summary>Options of <see cref="ModelComparison.Verify"/>.</summary>
public sealed record VerifyOptions
{
    /// <summary>Decode steps; null = max(3 × the largest window, 32).</summary>
    public int? Steps { get; init; }
    /// <summary>Prompt tokens (prefilled in chunks of <see cref="PrefillChunk"/>).</summary>
    public int PromptLength { get; init; } = 8;
    /// <summary>Prefill chunk.</summary>
    public int PrefillChunk { get; init; } = 16;
    /// <summary>Sequences, decoded together.</summary>
    public int Batch { get; init; } = 1;
    /// <summary>Seed of the random tokens.</summary>
    public int Seed { get; init; } = 1234;
    /// <summary>Tolerance on max |Δlogit| for <see cref="VerifyReport.Exact"/>.</summary>
    public float Tolerance { get; init; } = 1e-3f;
    /// <summary>Options for opening both models (the converted one: unless <see cref="ConvertedModel"/> is set).</summary>
    public ModelOptions Model { get; init; } = new();
    /// <summary>Options for opening the converted model when they differ from <see cref="Model"/> (for example <see cref="ModelOptions.CudaGraphDecode"/>, which an unconverted model cannot take); null = <see cref="Model"/>.</summary>
    public ModelOptions? ConvertedModel { get; init; }
}
