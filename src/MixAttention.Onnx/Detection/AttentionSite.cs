namespace MixAttention.Onnx.Detection;

/// <summary>
/// One layer's attention as found in an exported graph: the seam between detection and lowering.
/// Detectors produce it; layouts and backends consume it and never look at the source pattern again.
/// </summary>
public sealed record AttentionSite
{
    /// <summary>Layer index, 0-based, in execution order.</summary>
    public required int Layer { get; init; }
    /// <summary>Export style the site was found in.</summary>
    public required ExportStyle Style { get; init; }
    /// <summary>The nodes that make up the attention core (from the score MatMul / fused op to the merged output), in graph order.</summary>
    public required IReadOnlyList<string> Nodes { get; init; }
    /// <summary>Query value entering the attention core (after rotary unless <see cref="Rotary"/> is fused).</summary>
    public required string Query { get; init; }
    /// <summary>This step's keys entering the core (before concatenation with the past); null when packed in <see cref="Query"/>.</summary>
    public string? Key { get; init; }
    /// <summary>This step's values entering the core; null when packed in <see cref="Query"/>.</summary>
    public string? Value { get; init; }
    /// <summary>Layout of <see cref="Query"/> / <see cref="Key"/> / <see cref="Value"/>.</summary>
    public required HeadLayout QkvLayout { get; init; }
    /// <summary>
    /// For ops that project Q/K/V themselves (ORT <c>Attention</c>): the packed [hidden, (Hq+2·Hkv)·D] weight that
    /// turns <see cref="Query"/> (then the hidden states) into packed QKV; null when Q/K/V arrive projected.
    /// </summary>
    public string? QkvWeight { get; init; }
    /// <summary>Bias added after <see cref="QkvWeight"/>, if any.</summary>
    public string? QkvBias { get; init; }
    /// <summary>The attention output that the rest of the graph consumes (see <see cref="OutputLayout"/>).</summary>
    public required string Output { get; init; }
    /// <summary>Layout of <see cref="Output"/>: BSHD [B, S, Hq·D] for most styles, BNSH [B, Hq, S, D] for 4-D ONNX <c>Attention</c>.</summary>
    public HeadLayout OutputLayout { get; init; } = HeadLayout.BSHD;
    /// <summary>Cache graph inputs/outputs; null for a graph without KV cache and for a layer that reads another layer's cache.</summary>
    public CacheTensors? Cache { get; init; }
    /// <summary>
    /// The layer whose cache this layer reads in the source model (KV sharing, e.g. Gemma-3n's last layers): it has no
    /// cache of its own and its keys/values are that layer's. Null for a layer with its own cache.
    /// </summary>
    public int? SharesKvOf { get; init; }
    /// <summary>
    /// Set by detection for a fused op that computes no keys/values and takes another attention node's present as its
    /// past: the name of that node (resolved to <see cref="SharesKvOf"/> once layers are numbered).
    /// </summary>
    public string? ReadsKvOfNode { get; init; }
    /// <summary>Number of query heads.</summary>
    public required int NumHeads { get; init; }
    /// <summary>Number of key/value heads (== NumHeads without GQA).</summary>
    public required int KvNumHeads { get; init; }
    /// <summary>Head size D.</summary>
    public required int HeadSize { get; init; }
    /// <summary>Softmax scale applied to Q·Kᵀ.</summary>
    public required float Scale { get; init; }
    /// <summary>Tanh softcap on the scores; 0 = none.</summary>
    public float Softcap { get; init; }
    /// <summary>How rotary embeddings are applied.</summary>
    public RotaryInfo Rotary { get; init; } = RotaryInfo.None;
    /// <summary>The layer's own sliding window (keys visible per query, current token included); 0 = global.</summary>
    public int Window { get; init; }
    /// <summary>Where <see cref="Window"/> came from.</summary>
    public WindowSource WindowSource { get; init; } = WindowSource.None;
    /// <summary>ONNX element type of Q/K/V and the cache (TensorProto.DataType).</summary>
    public required int ElementType { get; init; }
    /// <summary>Extra facts a detector wants to pass on (e.g. the mask value it proved), for reports only.</summary>
    public IReadOnlyDictionary<string, string> Notes { get; init; } = new Dictionary<string, string>();

    /// <summary>Query heads per KV head.</summary>
    public int GroupSize => NumHeads / KvNumHeads;
}
