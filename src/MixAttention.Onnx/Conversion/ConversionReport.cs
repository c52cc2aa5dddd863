using System.Text.Json.Nodes;
using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Graph;
using MixAttention.Onnx.Layouts;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Conversion;

/// <summary>What a conversion did, for the summary table and <c>--json</c>.</summary>
public sealed record ConversionReport
{
    /// <summary>Input model path.</summary>
    public required string Input { get; init; }
    /// <summary>Output model path (null for in-memory conversions).</summary>
    public string? Output { get; init; }
    /// <summary>Export style(s) detected.</summary>
    public required IReadOnlyList<ExportStyle> Styles { get; init; }
    /// <summary>The layout applied.</summary>
    public required MixAttentionLayout Layout { get; init; }
    /// <summary>The cache plan written into the model.</summary>
    public required CachePlan Plan { get; init; }
    /// <summary>Dead code removed (reader K/V projections, old attention cores).</summary>
    public required DeadCodeReport Removed { get; init; }
    /// <summary>KV bytes per sequence at 4K and 32K context: before (every layer a full cache) and after.</summary>
    public required IReadOnlyList<(long Context, long Before, long After)> KvBytesPerSequence { get; init; }
    /// <summary>Where the converted model attends differently from the source (empty = exact).</summary>
    public required IReadOnlyList<string> Differences { get; init; }
    /// <summary>KV caches the source model keeps (fewer than its layers when layers share one).</summary>
    public int SourceCaches { get; init; }
    /// <summary>Wall time of the whole conversion.</summary>
    public TimeSpan Elapsed { get; init; }

    /// <summary>Machine-readable form.</summary>
    public JsonObject ToJson() => new()
    {
        ["input"] = Input,
        ["output"] = Output,
        ["styles"] = new JsonArray(Styles.Select(s => (JsonNode)JsonValue.Create(s.ToString())!).ToArray()),
        ["layout"] = Layout.ToCompactString(withWindows: true),
        ["layout_name"] = Layout.Name,
        ["backend"] = Plan.Backend,
        ["layers"] = Layout.Count,
        ["owners"] = new JsonArray(Layout.Owners.Select(o => (JsonNode)JsonValue.Create(o)).ToArray()),
        ["removed_nodes"] = Removed.Nodes,
        ["removed_initializers"] = Removed.Initializers,
        ["removed_parameters"] = Removed.Parameters,
        ["removed_bytes"] = Removed.InitializerBytes,
        ["kv_bytes_per_sequence"] = new JsonArray(KvBytesPerSequence.Select(k => (JsonNode)new JsonObject { ["context"] = k.Context, ["before"] = k.Before, ["after"] = k.After }).ToArray()),
        ["exact"] = Differences.Count == 0,
        ["differences"] = new JsonArray(Differences.Select(d => (JsonNode)JsonValue.Create(d)!).ToArray()),
        ["elapsed_ms"] = (long)Elapsed.TotalMilliseconds,
        ["cache_plan"] = JsonNode.Parse(Plan.ToJson()),
    };
}
