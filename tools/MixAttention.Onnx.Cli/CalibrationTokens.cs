using System.Globalization;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Runtime;

namespace MixAttention.Onnx.Cli;

/// <summary>
/// The tokens of <c>convert --calibrate</c>: a text file (tokenized with the tokenizer beside the model, or
/// <c>--tokenizer</c>), a file or a comma-separated list of token ids, or <c>random:N</c> (N seeded random ids: the same
/// scales on every run, but not representative of real text).
/// </summary>
internal static class CalibrationTokens
{
    /// <summary>Random tokens when --calibrate is not given.</summary>
    public const int DefaultRandom = 256;
    /// <summary>Most tokens a calibration reads (the source model keeps a full cache of them).</summary>
    public const int MaxTokens = 8192;

    public static (long[] Tokens, string Description) Resolve(string? spec, string model, string? tokenizerDir)
    {
        int vocab = Vocabulary(model);
        long[] tokens;
        string description;
        spec ??= $"random:{DefaultRandom}";
        if (spec.StartsWith("random:", StringComparison.Ordinal))
        {
            if (!int.TryParse(spec["random:".Length..], NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n < 1 || n > MaxTokens)
                throw new MixAttentionException($"--calibrate '{spec}': random:N needs N between 1 and {MaxTokens}.");
            var rng = new Random(20260);
            tokens = Enumerable.Range(0, n).Select(_ => (long)rng.Next(0, vocab)).ToArray();
            description = $"{n} random tokens";
        }
        else if (Ids(spec) is { } listed)
        {
            tokens = listed;
            description = $"{tokens.Length} listed tokens";
        }
        else if (File.Exists(spec))
        {
            var text = SafeFiles.ReadAllText(spec, "--calibrate file", 16 << 20);
            if (Ids(text) is { } ids)
            {
                tokens = ids;
                description = $"the token ids in {Path.GetFileName(spec)}";
            }
            else
            {
                var dir = tokenizerDir ?? Path.GetDirectoryName(Path.GetFullPath(model))!;
                if (!OrtExtensionsTokenizer.Exists(dir))
                    throw new MixAttentionException($"--calibrate '{spec}' is text, but there is no tokenizer in {dir}; pass --tokenizer DIR, token ids, or random:N.");
                using var tok = OrtExtensionsTokenizer.FromDirectory(dir);
                tokens = tok.Encode(text);
                description = $"{Path.GetFileName(spec)}";
            }
        }
        else
            throw new MixAttentionException($"--calibrate '{spec}' is neither a file, a comma-separated list of token ids, nor random:N.");
        if (tokens.Length == 0)
            throw new MixAttentionException($"--calibrate '{spec}' gave no tokens.");
        if (tokens.Length > MaxTokens) tokens = tokens[..MaxTokens];
        if (tokens.FirstOrDefault(t => t < 0 || t >= vocab) is var bad && (bad < 0 || bad >= vocab))
            throw new MixAttentionException($"--calibrate '{spec}': token id {bad} is outside the model's vocabulary (0..{vocab - 1}).");
        return (tokens, description);
    }

    /// <summary>Token ids separated by commas or white space, or null when the text is anything else.</summary>
    private static long[]? Ids(string text)
    {
        var parts = text.Split(new[] { ',', ' ', '\n', '\r', '\t' }, StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) return null;
        var ids = new long[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!long.TryParse(parts[i], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out ids[i])) return null;
        return ids;
    }

    /// <summary>The vocabulary: the last axis of the logits output (256 when it is symbolic).</summary>
    private static int Vocabulary(string model)
    {
        var proto = OnnxModel.Load(model, new OnnxLoadOptions { ValidateExternalData = false }).Proto;
        var logits = proto.Graph.Output.FirstOrDefault(o => o.Name == "logits") ?? proto.Graph.Output.FirstOrDefault();
        var last = logits?.Type?.TensorType?.Shape?.Dim.LastOrDefault();
        return last is { DimValue: > 0 and <= int.MaxValue } d ? (int)d.DimValue : 256;
    }
}
