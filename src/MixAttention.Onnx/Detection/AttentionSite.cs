namespace MixAttention.Onnx.Detection;

/// <summary>How the exporter wrote the attention of a layer.</summary>
public enum ExportStyle
{
    /// <summary>TorchScript / optimum: MatMul → scale → mask → Softmax → MatMul, past concatenated with Concat.</summary>
    Decomposed,
    /// <summary>torch.onnx dynamo: ONNX <c>Attention</c> (opset 23/24).</summary>
    OnnxAttention,
    /// <summary>ORT transformers optimizer: <c>com.microsoft.Attention</c> with packed QKV weights and packed past [2,B,H,S,D].</summary>
    OrtAttention,
    /// <summary>ORT transformers optimizer: <c>com.microsoft.MultiHeadAttention</c>.</summary>
    OrtMultiHeadAttention,
    /// <summary>onnxruntime-genai builder: <c>com.microsoft.GroupQueryAttention</c>.</summary>
    GroupQueryAttention,
}

/// <summary>Memory layout of a Q/K/V value as the source graph produces it.</summary>
public enum HeadLayout
{
    /// <summary>[B, S, H·D]: heads packed in the last axis.</summary>
    BSHD,
    /// <summary>[B, H, S, D]: heads as their own axis.</summary>
    BNSH,
    /// <summary>[B, S, (Hq + 2·Hkv)·D]: Q, K and V packed together in one value (the Q value of the site; K and V are null).</summary>
    PackedQkv,
}

/// <summary>Where a layer's sliding window came from.</summary>
public enum WindowSource
{
    /// <summary>The layer attends to every earlier token.</summary>
    None,
    /// <summary>Stated by the graph itself (GQA <c>local_window_size</c>, a proven mask subgraph).</summary>
    Graph,
    /// <summary>From the Hugging Face <c>config.json</c> beside the model.</summary>
    HfConfig,
    /// <summary>From the <c>genai_config.json</c> beside the model.</summary>
    GenAiConfig,
    /// <summary>Given on the command line.</summary>
    CommandLine,
    /// <summary>The source keeps only the last W - 1 tokens in this layer's present cache (a Slice after the append).</summary>
    PresentCache,
}

/// <summary>How rotary position embeddings reach the attention of a layer.</summary>
public enum RotaryKind
{
    /// <summary>No rotary (absolute position embeddings, e.g. GPT-2).</summary>
    None,
    /// <summary>Rotary is applied by ordinary nodes before Q/K reach the site: nothing to do when lowering.</summary>
    AppliedBefore,
    /// <summary>The attention op rotates Q/K itself (GQA <c>do_rotary</c> with cos/sin caches).</summary>
    Fused,
}

/// <summary>Rotary embedding facts a backend must preserve.</summary>
/// <param name="Kind">Where rotation happens.</param>
/// <param name="CosCache">Initializer or value holding the cos cache [max_pos, rotary_dim/2] (fused only).</param>
/// <param name="SinCache">Initializer or value holding the sin cache (fused only).</param>
/// <param name="Interleaved">GQA <c>rotary_interleaved</c>.</param>
public sealed record RotaryInfo(RotaryKind Kind, string? CosCache = null, string? SinCache = null, bool Interleaved = false)
{
    /// <summary>No rotary embedding.</summary>
    public static readonly RotaryInfo None = new(RotaryKind.None);
    /// <summary>Rotary applied by ordinary nodes upstream of the site.</summary>
    public static readonly RotaryInfo Before = new(RotaryKind.AppliedBefore);
}

/// <summary>The graph inputs/outputs that carry one layer's KV cache between steps.</summary>
/// <param name="PastKey">Graph input with the past keys (or the packed past [2,B,H,S,D] for ORT Attention).</param>
/// <param name="PastValue">Graph input with the past values; null when packed.</param>
/// <param name="PresentKey">Graph output with the updated keys (or the packed present).</param>
/// <param name="PresentValue">Graph output with the updated values; null when packed.</param>
/// <param name="Layout">Cache tensor layout: BNSH [B, Hkv, T, D] for every style we know.</param>
public sealed record CacheTensors(string PastKey, string? PastValue, string PresentKey, string? PresentValue, HeadLayout Layout = HeadLayout.BNSH)
{
    /// <summary>Tokens the source keeps in the present (a Slice on the sequence axis after the append); null = all.</summary>
    public long? PresentKeep { get; init; }

    /// <summary>True when keys and values travel in one tensor [2, B, H, T, D].</summary>
    public bool IsPacked => PastValue is null;
}

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
