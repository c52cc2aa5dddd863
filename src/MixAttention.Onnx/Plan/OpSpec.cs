namespace MixAttention.Onnx.Plan;

/// <summary>
/// The C# mirror of native/include/mixattention/op_spec.h: the names the converter writes into graphs and the
/// runtime, tests and benches feed to libmixattention_ops.so. Change them only together with that header and docs/ops.md.
/// </summary>
public static class OpSpec
{
    /// <summary>The custom-op domain.</summary>
    public const string Domain = "com.mixattention";
    /// <summary>Opset version of <see cref="Domain"/>.</summary>
    public const int OpsetVersion = 1;

    /// <summary>The owner op: attention over a ring (sliding) or global cache it updates in place.</summary>
    public const string WindowedAttention = "WindowedAttention";
    /// <summary>The reader op: attention over another layer's updated cache.</summary>
    public const string SharedKvAttention = "SharedKvAttention";

    /// <summary>Attribute (both ops): query heads.</summary>
    public const string AttrNumHeads = "num_heads";
    /// <summary>Attribute (both ops): KV heads.</summary>
    public const string AttrKvNumHeads = "kv_num_heads";
    /// <summary>Attribute (both ops): window; 0 = global.</summary>
    public const string AttrWindow = "window";
    /// <summary>Attribute (both ops): score scale; 0 = 1/sqrt(head size).</summary>
    public const string AttrScale = "scale";
    /// <summary>Attribute (both ops): logit softcap; 0 = none.</summary>
    public const string AttrSoftcap = "softcap";
    /// <summary>Attribute (both ops, with cos/sin caches): 1 = rotate pairs (2i, 2i+1).</summary>
    public const string AttrRotaryInterleaved = "rotary_interleaved";

    /// <summary>Session config entry: "1" makes WindowedAttention fail instead of copying past to present when they are not one buffer.</summary>
    public const string ConfigRequireInPlace = "mixattention.require_inplace";
    /// <summary>Session config entry: "1" makes the CUDA kernels copy the lengths to the host and check the cache rules.</summary>
    public const string ConfigCheckLengths = "mixattention.check_lengths";

    /// <summary>WindowedAttention inputs, in order (new_lengths, the cos/sin caches optional; k_scale/v_scale with int8/fp8 caches; block_table with a paged global cache).</summary>
    public static IReadOnlyList<string> OwnerInputs { get; } =
        ["query", "key", "value", "past_key", "past_value", "past_lengths", "new_lengths", "cos_cache", "sin_cache", "k_scale", "v_scale", "block_table"];
    /// <summary>WindowedAttention outputs, in order.</summary>
    public static IReadOnlyList<string> OwnerOutputs { get; } = ["output", "present_key", "present_value"];
    /// <summary>SharedKvAttention inputs, in order (new_lengths, the cos/sin caches optional; k_scale/v_scale with int8/fp8 caches).</summary>
    public static IReadOnlyList<string> ReaderInputs { get; } =
        ["query", "key_cache", "value_cache", "past_lengths", "new_lengths", "cos_cache", "sin_cache", "k_scale", "v_scale", "block_table"];
    /// <summary>SharedKvAttention outputs.</summary>
    public static IReadOnlyList<string> ReaderOutputs { get; } = ["output"];
}
