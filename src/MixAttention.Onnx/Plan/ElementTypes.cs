using MixAttention.Onnx.Onnx.Proto;

namespace MixAttention.Onnx.Plan;

/// <summary>
/// Element types as the plan names them (<see cref="CacheEntry.DType"/>: fp32, fp16, bf16, int8, fp8e4m3), as ONNX numbers them
/// (TensorProto.DataType; ONNX Runtime's TensorElementType has the same values) and their sizes: the one mapping
/// the converter, the reports and the runtime share.
/// </summary>
public static class ElementTypes
{
    /// <summary>ONNX FLOAT.</summary>
    public const int Float = (int)TensorProto.Types.DataType.Float;
    /// <summary>ONNX FLOAT16.</summary>
    public const int Float16 = (int)TensorProto.Types.DataType.Float16;
    /// <summary>ONNX BFLOAT16.</summary>
    public const int BFloat16 = (int)TensorProto.Types.DataType.Bfloat16;

    /// <summary>ONNX INT8 (a quantized cache).</summary>
    public const int Int8 = (int)TensorProto.Types.DataType.Int8;
    /// <summary>ONNX FLOAT8E4M3FN (a quantized cache: 4 exponent bits, 3 mantissa bits, no infinities, largest 448).</summary>
    public const int Float8E4M3 = (int)TensorProto.Types.DataType.Float8E4M3Fn;

    /// <summary>The plan's name of an ONNX element type: fp32, fp16, bf16, int8, fp8e4m3, else the ONNX name in lower case.</summary>
    public static string DTypeName(int onnxType) => ((TensorProto.Types.DataType)onnxType).ToString().ToLowerInvariant() switch
    {
        "float" => "fp32",
        "float16" => "fp16",
        "bfloat16" => "bf16",
        "float8e4m3fn" => "fp8e4m3",
        var other => other,
    };

    /// <summary>The ONNX element type of a plan dtype (fp32, fp16, bf16, int8, fp8e4m3, or their long names), or null for any other.</summary>
    public static int? FromDTypeName(string dtype) => dtype switch
    {
        "fp32" or "float32" or "float" => Float,
        "fp16" or "float16" => Float16,
        "bf16" or "bfloat16" => BFloat16,
        "int8" => Int8,
        "fp8e4m3" or "fp8" or "float8e4m3fn" => Float8E4M3,
        _ => null,
    };

    /// <summary>True for the quantized cache types (int8, fp8e4m3): they need scales.</summary>
    public static bool IsQuantizedDType(string dtype) => FromDTypeName(dtype) is Int8 or Float8E4M3;

    /// <summary>The largest magnitude a quantized type holds (qmax): 127 for int8, 448 for fp8 E4M3; null for a float type.</summary>
    internal static float? QuantizedMax(int onnxType) => onnxType switch
    {
        Int8 => 127f,
        Float8E4M3 => 448f,
        _ => null,
    };

    /// <summary>
    /// Bytes per element of a plan dtype: fp32/fp16/bf16 (and their long names), or any other ONNX type by the name
    /// <see cref="DTypeName"/> gives it (int8, float8e4m3fn, ...); null for a name that is none of these.
    /// </summary>
    public static int? SizeOfDType(string dtype) =>
        FromDTypeName(dtype) is { } known ? Size(known)
        : Enum.GetValues<TensorProto.Types.DataType>().Where(t => DTypeName((int)t) == dtype).Select(t => Size((int)t)).FirstOrDefault();

    /// <summary>Bytes per element of an ONNX data type, or null when not byte-sized (strings, 4-bit types).</summary>
    public static int? Size(int onnxType) => (TensorProto.Types.DataType)onnxType switch
    {
        TensorProto.Types.DataType.Float or TensorProto.Types.DataType.Int32 or TensorProto.Types.DataType.Uint32 => 4,
        TensorProto.Types.DataType.Double or TensorProto.Types.DataType.Int64 or TensorProto.Types.DataType.Uint64 or TensorProto.Types.DataType.Complex64 => 8,
        TensorProto.Types.DataType.Complex128 => 16,
        TensorProto.Types.DataType.Float16 or TensorProto.Types.DataType.Bfloat16 or TensorProto.Types.DataType.Int16 or TensorProto.Types.DataType.Uint16 => 2,
        TensorProto.Types.DataType.Int8 or TensorProto.Types.DataType.Uint8 or TensorProto.Types.DataType.Bool
            or TensorProto.Types.DataType.Float8E4M3Fn or TensorProto.Types.DataType.Float8E4M3Fnuz
            or TensorProto.Types.DataType.Float8E5M2 or TensorProto.Types.DataType.Float8E5M2Fnuz or TensorProto.Types.DataType.Float8E8M0 => 1,
        _ => null,
    };
}
