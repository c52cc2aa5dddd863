using System.Text.Json.Nodes;
using MixAttention.Onnx.Chat;
using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Runtime;

namespace MixAttention.Onnx.ChatServer;

/// <summary>
/// The one model the server serves: a <see cref="MixAttentionChatClient"/> (one session, one decode loop) opened at
/// start. Without a model folder it converts the bundled demo model (graphs/gpt2-ortattention, native layout) into a
/// temporary folder, deleted on shutdown.
/// </summary>
internal sealed class ChatModelHost : IDisposable
{
    private readonly string? _workDir;

    public ChatModelHost(ChatServerSettings settings, ILogger<ChatModelHost> logger)
    {
        string modelDir, tokenizerDir, modelId;
        if (settings.Model is { } model)
        {
            modelDir = Path.GetFullPath(model);
            if (!File.Exists(Path.Combine(modelDir, "model.onnx")))
                throw new MixAttentionException($"{modelDir} has no model.onnx; pass a folder with a (converted) model, or no folder for the bundled demo model.");
            tokenizerDir = settings.Tokenizer ?? modelDir;
            modelId = settings.ModelId ?? Path.GetFileName(modelDir.TrimEnd(Path.DirectorySeparatorChar));
        }
        else
        {
            var graphs = FindGraphs() ?? throw new MixAttentionException("no model folder given and the bundled demo model (graphs/gpt2-ortattention) is not above the current folder; pass MODEL_DIR.");
            _workDir = Path.Combine(Path.GetTempPath(), "mixattn-chatserver-" + Guid.NewGuid().ToString("N")[..8]);
            modelDir = Path.Combine(_workDir, "model");
            logger.LogInformation("no model given: converting the demo model {Source} (native layout) into {Dir}", Path.Combine(graphs, "gpt2-ortattention"), modelDir);
            Converter.Convert(Path.Combine(graphs, "gpt2-ortattention", "model.onnx"), Path.Combine(modelDir, "model.onnx"), new ConversionOptions { Layout = "native" });
            tokenizerDir = settings.Tokenizer ?? Path.Combine(graphs, "demo");
            modelId = settings.ModelId ?? "mixattention-demo";
            settings = settings with { MaxLength = settings.MaxLength ?? ContextLength(Path.Combine(graphs, "gpt2-ortattention")) };
        }
        var config = new SessionConfig
        {
            MaxBatch = settings.MaxBatch,
            MaxLength = settings.MaxLength ?? ContextLength(modelDir) ?? 2048,
            PrefillChunk = settings.PrefillChunk,
            KvBlocks = settings.KvBlocks,
        };
        Client = MixAttentionChatClient.Open(modelDir, config, new MixAttentionChatClientOptions
        {
            ModelId = modelId,
            MaxQueuedRequests = settings.MaxQueue,
            DefaultMaxOutputTokens = settings.DefaultMaxTokens,
        }, tokenizerDir);
        ModelId = modelId;
        Created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    }

    public MixAttentionChatClient Client { get; }
    public string ModelId { get; }
    public long Created { get; }

    /// <summary>The model's context length (genai_config.json context_length, or config.json max_position_embeddings / n_positions), at most 2048.</summary>
    private static int? ContextLength(string dir)
    {
        foreach (var (file, keys) in new[] { ("genai_config.json", new[] { "model.context_length" }), ("config.json", new[] { "max_position_embeddings", "n_positions" }) })
        {
            var path = Path.Combine(dir, file);
            if (!File.Exists(path)) continue;
            try
            {
                var root = JsonNode.Parse(File.ReadAllText(path));
                foreach (var key in keys)
                {
                    JsonNode? node = root;
                    foreach (var part in key.Split('.')) node = node?[part];
                    if (node is JsonValue v && v.TryGetValue<int>(out var n) && n > 0) return Math.Min(n, 2048);
                }
            }
            catch (System.Text.Json.JsonException)
            {
            }
        }
        return null;
    }

    private static string? FindGraphs()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "graphs", "gpt2-ortattention", "model.onnx"))) return Path.Combine(d.FullName, "graphs");
        return null;
    }

    public void Dispose()
    {
        Client.Dispose();
        if (_workDir is not null)
            try { Directory.Delete(_workDir, recursive: true); } catch (IOException) { }
    }
}
