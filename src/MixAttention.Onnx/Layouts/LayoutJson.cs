using System.Text.Json;

namespace MixAttention.Onnx.Layouts;

/// <summary>
/// Reads the version-1 layout document:
/// <c>{"version": 1, "name": "…", "layers": [{"layer": 0, "kv": 0, "window": 0}, {"kv": 1, "window": 1024}, …]}</c>.
/// <c>version</c> and <c>layers</c> are required; <c>name</c> and <c>description</c> are optional; per layer <c>kv</c> and
/// <c>window</c> are required and <c>layer</c> is optional (it must equal the entry's position). Unknown properties are errors.
/// Comments and trailing commas are allowed.
/// </summary>
public static class LayoutJson
{
    /// <summary>The schema version this code reads and writes.</summary>
    public const int Version = 1;

    private static readonly string[] TopLevel = ["version", "name", "description", "layers"];
    private static readonly string[] PerLayer = ["layer", "kv", "window", "kv_dtype"];

    /// <summary>Parses a layout document without validating it against a model.</summary>
    /// <param name="json">The document.</param>
    /// <param name="defaultName">Name to use when the document has none.</param>
    /// <param name="origin">Recorded on the layout.</param>
    /// <param name="spec">Recorded on the layout (e.g. the file path).</param>
    /// <exception cref="LayoutException">Not valid JSON or not a version-1 layout (<see cref="LayoutRule.MalformedJson"/>).</exception>
    public static MixAttentionLayout Read(string json, string defaultName = "custom", LayoutOrigin origin = LayoutOrigin.Json, string? spec = null)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            throw Error($"not valid JSON (line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1}): {e.Message}", null, e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw Error($"the document must be an object with \"version\" and \"layers\", not {Kind(root)}");
            foreach (var p in root.EnumerateObject())
                if (!TopLevel.Contains(p.Name))
                    throw Error($"unknown property \"{p.Name}\"; a version-1 layout has {string.Join(", ", TopLevel.Select(x => $"\"{x}\""))}");

            if (!root.TryGetProperty("version", out var version))
                throw Error($"missing \"version\": {Version}");
            if (version.ValueKind != JsonValueKind.Number || !version.TryGetInt32(out var v) || v != Version)
                throw Error($"unsupported \"version\" {version.GetRawText()}; this converter reads version {Version}");

            var name = defaultName;
            if (root.TryGetProperty("name", out var n))
            {
                if (n.ValueKind != JsonValueKind.String)
                    throw Error($"\"name\" must be a string, not {Kind(n)}");
                name = n.GetString() ?? defaultName;
            }
            if (root.TryGetProperty("description", out var d) && d.ValueKind != JsonValueKind.String)
                throw Error($"\"description\" must be a string, not {Kind(d)}");

            if (!root.TryGetProperty("layers", out var layersEl))
                throw Error("missing \"layers\": an array with one {\"kv\": …, \"window\": …} entry per layer");
            if (layersEl.ValueKind != JsonValueKind.Array)
                throw Error($"\"layers\" must be an array, not {Kind(layersEl)}");
            if (layersEl.GetArrayLength() == 0)
                throw Error("\"layers\" is empty; give one entry per layer");

            var layers = new List<LayerAssignment>();
            var i = 0;
            foreach (var e in layersEl.EnumerateArray())
            {
                if (e.ValueKind != JsonValueKind.Object)
                    throw Error($"layers[{i}] must be an object like {{\"kv\": {i}, \"window\": 0}}, not {Kind(e)}", i);
                foreach (var p in e.EnumerateObject())
                    if (!PerLayer.Contains(p.Name))
                        throw Error($"layers[{i}]: unknown property \"{p.Name}\"; a layer entry has \"layer\" (optional), \"kv\", \"window\", \"kv_dtype\" (optional)", i);
                if (e.TryGetProperty("layer", out var layerEl))
                {
                    var layer = Int(layerEl, i, "layer");
                    if (layer != i)
                        throw Error($"layers[{i}] says \"layer\": {layer}; entries must be in layer order, so it must be {i}", i);
                }
                if (!e.TryGetProperty("kv", out var kvEl))
                    throw Error($"layers[{i}]: missing \"kv\" (the layer whose cache layer {i} reads; {i} for an owner)", i);
                if (!e.TryGetProperty("window", out var wEl))
                    throw Error($"layers[{i}]: missing \"window\" (0 = global, W > 0 = sliding)", i);
                var kv = Int(kvEl, i, "kv");
                var window = Int(wEl, i, "window");
                if (window < 0)
                    throw new LayoutException(LayoutRule.InvalidWindow, $"layout JSON: layers[{i}]: \"window\" {window} is negative; use 0 for global or W > 0 for sliding", i);
                string? kvDType = null;
                if (e.TryGetProperty("kv_dtype", out var dtEl))
                {
                    kvDType = dtEl.ValueKind == JsonValueKind.String ? dtEl.GetString() : null;
                    if (kvDType is null || !Conversion.KvDTypes.IsKnown(kvDType))
                        throw Error($"layers[{i}]: \"kv_dtype\" must be one of {string.Join(", ", Conversion.KvDTypes.Names.Select(x => $"\"{x}\""))}, not {dtEl.GetRawText()}", i);
                }
                layers.Add(new LayerAssignment(i, kv, window) { KvDType = kvDType });
                i++;
            }
            return new MixAttentionLayout(layers, name, origin, spec);
        }
    }

    private static int Int(JsonElement e, int layer, string prop)
    {
        if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out var value))
            throw Error($"layers[{layer}]: \"{prop}\" must be an integer, not {e.GetRawText()}", layer);
        return value;
    }

    private static string Kind(JsonElement e) => e.ValueKind.ToString().ToLowerInvariant();

    private static LayoutException Error(string message, int? layer = null, Exception? inner = null) =>
        new(LayoutRule.MalformedJson, $"layout JSON: {message}", layer, inner);
}
