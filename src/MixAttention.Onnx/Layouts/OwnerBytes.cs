namespace MixAttention.Onnx.Layouts;

/// <summary>KV bytes of one cache owner at one context length.</summary>
/// <param name="Layer">The owner layer.</param>
/// <param name="Window">Its window; 0 = global.</param>
/// <param name="Capacity">Token slots per sequence.</param>
/// <param name="Readers">How many other layers read it.</param>
/// <param name="Bytes">2 (K and V) × kv heads × head size × element size × capacity.</param>
public sealed record OwnerBytes(int Layer, int Window, long Capacity, int Readers, long Bytes);
