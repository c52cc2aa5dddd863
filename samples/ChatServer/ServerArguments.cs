namespace MixAttention.Onnx.ChatServer;

/// <summary>Separates the sample's own arguments (a model folder, <c>--tokenizer DIR</c>) from ASP.NET Core's (<c>--urls …</c>, <c>--Section:Key=value</c>).</summary>
internal static class ServerArguments
{
    public static (string? Model, string? Tokenizer, string[] Others) Split(string[] args)
    {
        string? model = null, tokenizer = null;
        var rest = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--tokenizer" && i + 1 < args.Length) tokenizer = args[++i];
            else if (args[i].StartsWith('-')) { rest.Add(args[i]); if (!args[i].Contains('=') && i + 1 < args.Length && !args[i + 1].StartsWith('-')) rest.Add(args[++i]); }
            else if (model is null) model = args[i];
            else rest.Add(args[i]);
        }
        return (model, tokenizer, rest.ToArray());
    }
}
