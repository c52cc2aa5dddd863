using MixAttention.Onnx.Onnx.Proto;

namespace MixAttention.Onnx.Plan;

/// <summary>
/// Element types as the plan names them (<see cref="CacheEntry.DType"/>: fp32, fp16, bf16), as ONNX numbers them
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

    /// <summary>The plan's name of an ONNX element type: fp32, fp16, bf16, else the ONNX name in lower case.</summary>
    public static string DTypeName(int onnxType) => ((TensorProto.Types.DataType)onnxType).ToString().ToLowerInvariant() switch
    {
        "float" => "fp32",
        "float16" => "fp16",
        "bfloat16" => "bf16",
        var other => other,
    };

    /// <summary>The ONNX element type of a plan dtype (fp32, fp16, bf16, or their long names), or null for any other.</summary>
    public static int? FromDTypeName(string dtype) => dtype switch
    {
        "fp32" or "float32" or "float" => Float,
        "fp16" or "float16" => Float16,
        "bf16" or "bfloat16" => BFloat16,
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
