namespace MixAttention.Onnx.Plan;

/// <summary>How the runtime sizes an owner's cache (capacity along the sequence axis).</summary>
public enum CapacityRule
{
    /// <summary>The runtime's maximum sequence length (global owners).</summary>
    MaxLength,
    /// <summary>A ring of the window, plus (prefill chunk − 1) slots when other layers read it.</summary>
    Window,
    /// <summary>The cache grows each step (past/present concatenation; reference backend).</summary>
    Growing,
}
