using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using MixAttention.Onnx.Onnx.Proto;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// Text ⇄ token ids through ONNX Runtime Extensions: two one-node graphs built from a model folder's
/// <c>tokenizer.json</c> and <c>tokenizer_config.json</c> — <c>HfJsonTokenizer</c> (the two files as attributes) to
/// encode, <c>BpeDecoder</c> (id vocabulary, byte decoder, added tokens from tokenizer.json) to decode.
/// Decoding supports byte-level BPE tokenizers (GPT-2 style: <c>decoder.type = ByteLevel</c>).
/// </summary>
public sealed class OrtExtensionsTokenizer : IDisposable
{
    private const string Contrib = "ai.onnx.contrib";
    private readonly SessionOptions _options;
    private readonly InferenceSession _encoder;
    private readonly InferenceSession _decoder;
    private int _disposed;

    private OrtExtensionsTokenizer(SessionOptions options, InferenceSession encoder, InferenceSession decoder, IReadOnlyList<long> stop, int vocab)
    {
        _options = options;
        _encoder = encoder;
        _decoder = decoder;
        StopTokens = stop;
        VocabSize = vocab;
    }

    /// <summary>Largest vocabulary accepted (ids must lie below it).</summary>
    internal const long MaxVocabulary = 1L << 24;

    /// <summary>The end-of-sequence token(s) from tokenizer_config.json (eos_token).</summary>
    public IReadOnlyList<long> StopTokens { get; }

    /// <summary>Largest token id + 1.</summary>
    public int VocabSize { get; }

    /// <summary>True when <paramref name="directory"/> has the two files.</summary>
    public static bool Exists(string directory) =>
        File.Exists(Path.Combine(directory, "tokenizer.json")) && File.Exists(Path.Combine(directory, "tokenizer_config.json"));

    /// <summary>Builds the tokenizer from <paramref name="directory"/>/tokenizer.json and tokenizer_config.json.</summary>
    public static OrtExtensionsTokenizer FromDirectory(string directory)
    {
        var jsonPath = Path.Combine(directory, "tokenizer.json");
        var configPath = Path.Combine(directory, "tokenizer_config.json");
        if (!Exists(directory)) throw new MixAttentionException($"{directory} has no tokenizer.json and tokenizer_config.json.");
        // Untrusted folder: both files regular, inside it (links resolved), of bounded size; every JSON value checked.
        var vocabText = MixAttention.Onnx.Onnx.SafeFiles.ReadAllText(MixAttention.Onnx.Onnx.SafeFiles.SideFile(directory, "tokenizer.json", "tokenizer.json") ?? jsonPath, "tokenizer.json", MixAttention.Onnx.Onnx.SafeFiles.MaxTokenizerBytes);
        var configText = MixAttention.Onnx.Onnx.SafeFiles.ReadAllText(MixAttention.Onnx.Onnx.SafeFiles.SideFile(directory, "tokenizer_config.json", "tokenizer_config.json") ?? configPath, "tokenizer_config.json", MixAttention.Onnx.Onnx.SafeFiles.MaxConfigBytes);
        string idVocab, addedTokens, specialIds;
        long maxId;
        var stop = new List<long>();
        try
        {
            var tok = JsonNode.Parse(vocabText) as JsonObject ?? throw new MixAttentionException($"{jsonPath} is not a JSON object.");
            var config = JsonNode.Parse(configText) as JsonObject ?? throw new MixAttentionException($"{configPath} is not a JSON object.");

            // Id → token table and added tokens for BpeDecoder.
            var vocab = (tok["model"] as JsonObject)?["vocab"] as JsonObject ?? throw new MixAttentionException($"{jsonPath}: model.vocab is missing (only BPE tokenizers are supported).");
            var added = (tok["added_tokens"] as JsonArray ?? new JsonArray()).OfType<JsonObject>()
                .Select(a => (Id: a["id"]!.GetValue<long>(), Content: a["content"]!.GetValue<string>(), Special: a["special"]?.GetValue<bool>() ?? false)).ToList();
            var ids = vocab.Select(kv => (Token: kv.Key, Id: kv.Value!.GetValue<long>())).ToList();
            maxId = Math.Max(ids.Select(t => t.Id).DefaultIfEmpty(0).Max(), added.Select(a => a.Id).DefaultIfEmpty(0).Max());
            long minId = Math.Min(ids.Select(t => t.Id).DefaultIfEmpty(0).Min(), added.Select(a => a.Id).DefaultIfEmpty(0).Min());
            // The id table is dense (one string per id up to the largest): a single id of 300,000,000 would allocate
            // 300 million strings. Real vocabularies use ids 0..count-1; allow gaps, not a table mostly empty.
            long entries = ids.Count + added.Count;
            if (minId < 0 || maxId >= MaxVocabulary || maxId + 1 > 2 * entries + 1024)
                throw new MixAttentionException($"{jsonPath}: token ids run from {minId} to {maxId} for {entries:N0} tokens; ids must be in [0, {MaxVocabulary:N0}) and mostly used (at most 2 × the token count + 1024).");
            var decoderType = tok["decoder"] is JsonObject dec ? dec["type"]?.GetValue<string>() : null;
            if (decoderType is not null && decoderType != "ByteLevel")
                throw new MixAttentionException($"{jsonPath}: decoder '{decoderType}' is not supported; decoding needs a byte-level BPE tokenizer (GPT-2 style).");
            var byId = new string[maxId + 1];
            foreach (var (token, id) in ids) byId[id] = token;
            idVocab = string.Join("\n", byId.Select(t => t ?? ""));
            addedTokens = string.Join("\n", added.Select(a => $"{a.Id}\t{a.Content}"));
            specialIds = string.Join("\n", added.Where(a => a.Special).Select(a => $"{a.Id}"));

            string? eos = config["eos_token"] switch
            {
                JsonValue v => v.GetValue<string>(),
                JsonObject o => o["content"]?.GetValue<string>(),
                _ => null,
            };
            if (eos is not null)
            {
                var hit = added.FirstOrDefault(a => a.Content == eos);
                if (hit.Content is not null) stop.Add(hit.Id);
                else if (vocab[eos] is { } id) stop.Add(id.GetValue<long>());
            }
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or NullReferenceException or OverflowException or ArgumentException)
        {
            throw new MixAttentionException($"{directory}: tokenizer.json / tokenizer_config.json are malformed: {e.Message}", e);
        }
        var byteDecoder = string.Join("\n", ByteToUnicode().Select((u, b) => $"{u}\t{b}"));

        var options = new SessionOptions();
        InferenceSession? encoder = null;
        try
        {
            options.RegisterCustomOpLibrary(OrtExtensionsLibrary.GetRequired());
            encoder = new InferenceSession(Graph("HfJsonTokenizer", "text", TensorProto.Types.DataType.String, "ids", TensorProto.Types.DataType.Int64,
                ("tokenizer_vocab", vocabText), ("tokenizer_config", configText)), options);
            var decoder = new InferenceSession(Graph("BpeDecoder", "ids", TensorProto.Types.DataType.Int64, "text", TensorProto.Types.DataType.String,
                ("id_vocab", idVocab), ("byte_decoder", byteDecoder), ("added_tokens", addedTokens), ("all_special_ids", specialIds)), options);
            return new OrtExtensionsTokenizer(options, encoder, decoder, stop, (int)maxId + 1);
        }
        catch (OnnxRuntimeException e)
        {
            encoder?.Dispose();
            options.Dispose();
            throw new MixAttentionException($"cannot build the tokenizer from {directory}: {e.Message}", e);
        }
        catch
        {
            encoder?.Dispose();
            options.Dispose();
            throw;
        }
    }

    /// <summary>Token ids of <paramref name="text"/>.</summary>
    public long[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        ThrowIfDisposed();
        using var runOptions = new RunOptions();
        using var input = OrtValue.CreateFromStringTensor(new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<string>(new[] { text }, new[] { 1 }));
        using var outputs = _encoder.Run(runOptions, new[] { "text" }, new[] { input }, new[] { "ids" });
        return outputs[0].GetTensorDataAsSpan<long>().ToArray();
    }

    /// <summary>Text of <paramref name="ids"/> (special tokens included).</summary>
    public string Decode(IReadOnlyList<long> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        ThrowIfDisposed();
        if (ids.Count == 0) return "";
        for (int i = 0; i < ids.Count; i++)
            if (ids[i] < 0 || ids[i] >= VocabSize)
                throw new MixAttentionException($"token id {ids[i]} (at {i}) is outside the tokenizer's vocabulary [0, {VocabSize}).");
        using var runOptions = new RunOptions();
        using var input = OrtValue.CreateTensorValueFromMemory(ids.ToArray(), new long[] { ids.Count });
        using var outputs = _decoder.Run(runOptions, new[] { "ids" }, new[] { input }, new[] { "text" });
        return outputs[0].GetStringElement(0);
    }

    /// <summary>
    /// Streams text for a growing token list: returns what the text of <paramref name="ids"/> adds to the
    /// <paramref name="emittedChars"/> characters already emitted, holding back an incomplete UTF-8 character (U+FFFD at the end).
    /// </summary>
    public string DecodeIncrement(IReadOnlyList<long> ids, ref int emittedChars)
    {
        var text = Decode(ids);
        if (text.EndsWith('\uFFFD')) return "";
        var delta = text.Length > emittedChars ? text[emittedChars..] : "";
        emittedChars = text.Length;
        return delta;
    }

    private static byte[] Graph(string op, string input, TensorProto.Types.DataType inType, string output, TensorProto.Types.DataType outType, params (string Name, string Value)[] attributes)
    {
        var node = new NodeProto { OpType = op, Domain = Contrib, Name = op };
        node.Input.Add(input);
        node.Output.Add(output);
        foreach (var (name, value) in attributes)
            node.Attribute.Add(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFrom(value, Encoding.UTF8) });
        var graph = new GraphProto { Name = op.ToLowerInvariant() };
        graph.Node.Add(node);
        graph.Input.Add(new ValueInfoProto { Name = input, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)inType } } });
        graph.Output.Add(new ValueInfoProto { Name = output, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)outType } } });
        var model = new ModelProto { IrVersion = 8, Graph = graph, ProducerName = "MixAttention.Onnx.Runtime" };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = Contrib, Version = 1 });
        return model.ToByteArray();
    }

    /// <summary>GPT-2's byte → printable character table (the code point of each byte's stand-in, indexed by byte).</summary>
    private static int[] ByteToUnicode()
    {
        var map = new int[256];
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? b : 256 + n++;
        }
        return map;
    }

    private void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _disposed) != 0)
            throw new ObjectDisposedException(nameof(OrtExtensionsTokenizer), $"this {nameof(OrtExtensionsTokenizer)} was disposed; create it again with OrtExtensionsTokenizer.FromDirectory.");
    }

    /// <summary>Disposes both sessions and the options. A second call does nothing.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _encoder.Dispose();
        _decoder.Dispose();
        _options.Dispose();
    }
}
