namespace MixAttention.Onnx.Plan;

/// <summary>The lowering backends, as the command line and <see cref="CachePlan.Backend"/> name them.</summary>
public static class BackendName
{
    /// <summary>Our custom ops (<see cref="OpSpec.Domain"/>): in-place caches, every node on the CUDA provider.</summary>
    public const string Ops = "ops";
    /// <summary>ONNX Runtime's GroupQueryAttention (com.microsoft): in-place caches, shape arithmetic on the CPU.</summary>
    public const string OrtGqa = "ort-gqa";
    /// <summary>Plain ONNX: caches grow each step (past/present concatenation).</summary>
    public const string Reference = "reference";
    /// <summary>All of them, in the order the command line lists them.</summary>
    public static IReadOnlyList<string> All { get; } = [Ops, OrtGqa, Reference];
}
