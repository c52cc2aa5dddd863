using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Conversion;

/// <summary>Options of one conversion.</summary>
public sealed record ConversionOptions
{
    /// <summary>Layout spec: compact string, JSON file, or preset name.</summary>
    public required string Layout { get; init; }
    /// <summary>Window for sliding layers the model does not define (<c>--window</c>).</summary>
    public int? Window { get; init; }
    /// <summary>Backend: ops (default), ort-gqa, reference.</summary>
    public string Backend { get; init; } = BackendName.Ops;
    /// <summary>Overwrite an existing output.</summary>
    public bool Force { get; init; }
    /// <summary>Share the source's weights file through a hard link when possible (default) instead of writing a compact copy.</summary>
    public bool LinkWeights { get; init; } = true;
    /// <summary>Load-time safety options.</summary>
    public OnnxLoadOptions Load { get; init; } = new();
    /// <summary>
    /// Cache element type of every owner (<c>--kv-dtype</c>): auto (the model's), fp16 or bf16 (only the model's own),
    /// fp8 (E4M3) or int8. A JSON layout's per-layer <c>kv_dtype</c> takes precedence.
    /// </summary>
    public string KvDType { get; init; } = "auto";
    /// <summary>Scales of quantized caches (<c>--kv-scale</c>): calibrate (needs <see cref="Calibration"/>), absmax:X or fixed:S.</summary>
    public string KvScale { get; init; } = "calibrate";
    /// <summary>One scale per tensor, per KV head or per channel (<c>--kv-scale-granularity</c>).</summary>
    public KvScaleGranularity KvScaleGranularity { get; init; } = KvScaleGranularity.Channel;
    /// <summary>
    /// Rows per block of paged global caches (<c>--paged [--block-size N]</c>, ops backend only): global owners' caches
    /// become block pools read through a <c>block_table</c> input (docs/ops.md, "Paged caches"). Null: contiguous caches.
    /// </summary>
    public int? PagedBlockSize { get; init; }
    /// <summary>The calibration run for <c>--kv-scale calibrate</c> (made by the runtime's <c>KvCalibrator</c> on the same source).</summary>
    public KvCalibration? Calibration { get; init; }
}
