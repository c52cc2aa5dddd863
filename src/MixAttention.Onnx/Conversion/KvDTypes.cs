using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Conversion;

/// <summary>
/// The cache element types a conversion may ask for (<c>--kv-dtype</c>, a JSON layout's <c>kv_dtype</c>): <c>auto</c>
/// (the model's own type), <c>fp16</c> and <c>bf16</c> (only when that is the model's type: the converter changes no
/// float type), and the quantized <c>fp8</c> (E4M3) and <c>int8</c>.
/// </summary>
internal static class KvDTypes
{
    /// <summary>The names, in the order help and errors list them.</summary>
    public static IReadOnlyList<string> Names { get; } = ["auto", "fp16", "bf16", "fp8", "int8"];

    /// <summary>True for one of <see cref="Names"/>.</summary>
    public static bool IsKnown(string name) => Names.Contains(name);

    /// <summary>
    /// The ONNX element type of a cache asked to be <paramref name="name"/> in a model whose attention is
    /// <paramref name="modelType"/>; <paramref name="what"/> names who asked, for the error.
    /// </summary>
    public static int Resolve(string name, int modelType, string what) => name switch
    {
        "auto" => modelType,
        "int8" => ElementTypes.Int8,
        "fp8" => ElementTypes.Float8E4M3,
        "fp16" or "bf16" when ElementTypes.FromDTypeName(name) == modelType => modelType,
        "fp16" or "bf16" => throw new MixAttentionException(
            $"{what} asks for {name} caches, but the model's attention is {ElementTypes.DTypeName(modelType)}: the converter stores caches in the model's own float type " +
            "(convert the model's weights to that type first) or quantized (--kv-dtype int8 or fp8)."),
        _ => throw new MixAttentionException($"{what}: unknown cache type '{name}'; use one of {string.Join(", ", Names)}."),
    };
}
