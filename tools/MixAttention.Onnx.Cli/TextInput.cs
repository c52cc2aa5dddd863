using System.CommandLine;
using System.Globalization;
using MixAttention.Onnx.Runtime;

namespace MixAttention.Onnx.Cli;

/// <summary>The text options of <c>eval</c> and <c>tune</c>: a text file with a tokenizer, or a file of token ids.</summary>
internal sealed class TextInput
{
    public readonly Option<string?> Text = new("--text") { HelpName = "FILE", Description = "A UTF-8 text file to score (or --tokens), tokenized with --tokenizer." };
    public readonly Option<string?> Tokens = new("--tokens") { HelpName = "FILE", Description = "A file of token ids to score (or --text; integers separated by spaces, commas or newlines; a JSON array works)." };
    public readonly Option<string?> Tokenizer = new("--tokenizer") { HelpName = "DIR", Description = "Folder with tokenizer.json and tokenizer_config.json for --text (default: the source model's folder)." };

    public IEnumerable<Option> All => new Option[] { Text, Tokens, Tokenizer };

    /// <summary>The token ids, or a user error naming what is wrong.</summary>
    public long[] Read(ParseResult parse, string sourceModel)
    {
        string? text = parse.GetValue(Text), tokens = parse.GetValue(Tokens);
        if (text is null == tokens is null) throw new MixAttentionException("give the text to score with exactly one of --text FILE or --tokens FILE.");
        string file = (text ?? tokens)!;
        if (!File.Exists(file)) throw new MixAttentionException($"{(text is null ? "--tokens" : "--text")} file not found: {file}");
        if (tokens is not null)
        {
            var ids = new List<long>();
            foreach (var word in File.ReadAllText(tokens).Split(new[] { ' ', '\t', '\r', '\n', ',', '[', ']' }, StringSplitOptions.RemoveEmptyEntries))
                ids.Add(long.TryParse(word, NumberStyles.Integer, CultureInfo.InvariantCulture, out var id) && id >= 0
                    ? id : throw new MixAttentionException($"--tokens {tokens}: '{word}' (token {ids.Count}) is not a token id (an integer >= 0)."));
            return Check(ids.ToArray(), tokens);
        }
        var dir = parse.GetValue(Tokenizer) ?? Path.GetDirectoryName(Path.GetFullPath(sourceModel))!;
        using var tokenizer = OrtExtensionsTokenizer.FromDirectory(dir);
        return Check(tokenizer.Encode(File.ReadAllText(text!)), text!);
    }

    private static long[] Check(long[] ids, string file) =>
        ids.Length >= 2 ? ids : throw new MixAttentionException($"{file} gives {ids.Length} token(s); scoring needs at least 2.");
}
