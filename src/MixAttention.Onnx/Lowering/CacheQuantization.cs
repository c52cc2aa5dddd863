using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Lowering;

/// <summary>
/// How one owner's cache is stored when it is quantized: its element type (int8, float8e4m3fn) and the float32 scales of
/// K and V (x ≈ q · scale), as many as <paramref name="Granularity"/> asks for (1, Hkv or Hkv·D, index h·D + d).
/// Lowering writes the scales as initializers and every backend reads the cache through them.
/// </summary>
internal sealed record CacheQuantization(int ElementType, KvScaleGranularity Granularity, float[] KeyScales, float[] ValueScales);
