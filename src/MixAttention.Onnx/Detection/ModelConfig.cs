using System.Text.Json;
using System.Text.Json.Nodes;

namespace MixAttention.Onnx.Detection;

/// <summary>
/// What the files beside an exported model say about it: the Hugging Face <c>config.json</c> and the
/// onnxruntime-genai <c>genai_config.json</c>. Used for facts a graph does not state (sliding windows
/// hidden in baked masks, layer types) and rewritten beside a converted model.
/// </summary>
internal sealed class ModelConfig
{
    private ModelConfig(JsonObject? hf, JsonObject? genai, string? hfPath, string? genaiPath)
    {
        HfConfig = hf; GenAiConfig = genai; HfConfigPath = hfPath; GenAiConfigPath = genaiPath;
    }

    /// <summary>Parsed config.json, if present.</summary>
    public JsonObject? HfConfig { get; }
    /// <summary>Parsed genai_config.json, if present.</summary>
    public JsonObject? GenAiConfig { get; }
    /// <summary>Path of config.json, if present.</summary>
    public string? HfConfigPath { get; }
    /// <summary>Path of genai_config.json, if present.</summary>
    public string? GenAiConfigPath { get; }

    /// <summary>No side files.</summary>
    public static ModelConfig Empty { get; } = new(null, null, null, null);

    /// <summary>
    /// Reads the side files from the folder of <paramref name="modelPath"/>. A malformed file is an error naming it; so is
    /// one that is not a regular file or (unless <paramref name="allowOutside"/>) links out of the folder.
    /// </summary>
    public static ModelConfig ForModel(string? modelPath, bool allowOutside = false)
    {
        if (modelPath is null) return Empty;
        var dir = Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        // Untrusted files: inside the model's folder (links resolved), regular, at most 16 MiB (Onnx.SafeFiles).
        var hfPath = Onnx.SafeFiles.SideFile(dir, "config.json", "config.json", allowOutside);
        var genaiPath = Onnx.SafeFiles.SideFile(dir, "genai_config.json", "genai_config.json", allowOutside);
        return new ModelConfig(Read(hfPath), Read(genaiPath), hfPath, genaiPath);
    }

    private static JsonObject? Read(string? path)
    {
        if (path is null) return null;
        try
        {
            return JsonNode.Parse(Onnx.SafeFiles.ReadAllText(path, "config file", Onnx.SafeFiles.MaxConfigBytes), documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }) as JsonObject
                ?? throw new Onnx.OnnxFormatException($"'{path}' is not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new Onnx.OnnxFormatException($"'{path}' is not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>The HF config's text sub-config when the model is multimodal (Gemma-3 keeps it under text_config).</summary>
    private JsonObject? Text => HfConfig?["text_config"] as JsonObject ?? HfConfig;

    /// <summary>Number of hidden layers the configs state, if any.</summary>
    public int? LayerCount =>
        Int(Text, "num_hidden_layers") ?? Int(Text, "n_layer") ?? Int(GenAiDecoder, "num_hidden_layers");

    /// <summary>Positions the model was built for (config.json's max_position_embeddings or n_positions), if stated.</summary>
    public int? MaxPositions => Int(Text, "max_position_embeddings") ?? Int(Text, "n_positions");

    private JsonObject? GenAiDecoder => GenAiConfig?["model"] is JsonObject m ? m["decoder"] as JsonObject : null;

    /// <summary>
    /// The sliding window of layer <paramref name="layer"/> according to the side files, with its source;
    /// (0, None) when they say the layer is global or say nothing.
    /// </summary>
    public (int Window, WindowSource Source) WindowOf(int layer)
    {
        var text = Text;
        if (text is not null)
        {
            var window = Int(text, "sliding_window");
            if (window is > 0)
            {
                if (text["layer_types"] is JsonArray types && layer < types.Count)
                {
                    var kind = types[layer] is JsonValue kv && kv.TryGetValue<string>(out var k) ? k : "";
                    return kind.Contains("sliding", StringComparison.OrdinalIgnoreCase) || kind.Contains("local", StringComparison.OrdinalIgnoreCase)
                        ? (window.Value, WindowSource.HfConfig) : (0, WindowSource.HfConfig);
                }
                if (Int(text, "sliding_window_pattern") is > 0 and var pattern)
                    return (layer + 1) % pattern == 0 ? (0, WindowSource.HfConfig) : (window.Value, WindowSource.HfConfig);
                if (text["use_sliding_window"] is JsonValue use && use.TryGetValue<bool>(out var on) && !on)
                    return (0, WindowSource.HfConfig);
                // Qwen2-style configs without layer_types: the first max_window_layers layers attend globally.
                if (Int(text, "max_window_layers") is >= 0 and var full && text["use_sliding_window"] is not null)
                    return layer < full ? (0, WindowSource.HfConfig) : (window.Value, WindowSource.HfConfig);
                return (window.Value, WindowSource.HfConfig);
            }
        }
        if (GenAiDecoder?["sliding_window"] is JsonObject sw && Int(sw, "window_size") is > 0 and var w)
        {
            if (sw["layers"] is JsonArray layers)
                return layers.Any(l => l is JsonValue lv && lv.TryGetValue<int>(out var li) && li == layer) ? (w, WindowSource.GenAiConfig) : (0, WindowSource.GenAiConfig);
            return (w, WindowSource.GenAiConfig);
        }
        return (0, WindowSource.None);
    }

    private static int? Int(JsonObject? o, string key) =>
        o?[key] is JsonValue v && v.TryGetValue<int>(out var i) ? i :
        o?[key] is JsonValue d && d.TryGetValue<double>(out var x) && x >= int.MinValue && x <= int.MaxValue ? (int)x : null;
}
