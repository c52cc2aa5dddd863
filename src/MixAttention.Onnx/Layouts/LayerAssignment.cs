namespace MixAttention.Onnx.Layouts;

/// <summary>What one layer does after conversion.</summary>
/// <param name="Layer">0-based layer index.</param>
/// <param name="KvSource">The layer whose KV cache this layer reads; equal to <paramref name="Layer"/> for an owner.</param>
/// <param name="Window">Keys visible per query, current token included (same meaning as <c>AttentionSite.Window</c>); 0 = global.</param>
public sealed record LayerAssignment(int Layer, int KvSource, int Window)
{
    /// <summary>
    /// The cache element type this layer asks for (<c>kv_dtype</c> in a JSON layout: fp16, bf16, fp8, int8, auto), or null
    /// to take the conversion's <c>--kv-dtype</c>. A reader stores nothing: its value must agree with its owner's.
    /// </summary>
    public string? KvDType { get; init; }

    /// <summary>True when the layer owns (writes) a cache; false when it reads an earlier layer's.</summary>
    public bool IsOwner => KvSource == Layer;

    /// <summary>True for sliding-window attention.</summary>
    public bool IsSliding => Window > 0;

    /// <summary>True for global (full causal) attention.</summary>
    public bool IsGlobal => Window == 0;

    /// <summary>The compact-string token: <c>N</c> or <c>Ns</c>, or <c>NsW</c> with <paramref name="withWindow"/>.</summary>
    public string ToToken(bool withWindow = false) =>
        IsSliding
            ? withWindow ? $"{KvSource}s{Window}" : $"{KvSource}s"
            : KvSource.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
