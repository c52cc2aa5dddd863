namespace MixAttention.Onnx.Graph;

/// <summary>What <see cref="ModelGraph.RemoveDeadCode"/> removed.</summary>
public sealed record DeadCodeReport(int Nodes, int Initializers, long InitializerBytes, long Parameters, IReadOnlyList<string> Inputs)
{
    /// <summary>The totals of two passes.</summary>
    public DeadCodeReport Add(DeadCodeReport other) => new(Nodes + other.Nodes, Initializers + other.Initializers,
        InitializerBytes + other.InitializerBytes, Parameters + other.Parameters, Inputs.Concat(other.Inputs).ToArray());
}
