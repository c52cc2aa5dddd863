namespace MixAttention.Onnx.Layouts;

/// <summary>How the sliding layers between two global layers share caches.</summary>
public enum SlidingSharing
{
    /// <summary>Every sliding layer owns its cache.</summary>
    None,
    /// <summary>A run of r sliding layers splits into pairs, the last group a triple when r is odd (5 → 2+3, 3 → 3, 4 → 2+2, 1 → 1).</summary>
    PairsThenTriple,
}
