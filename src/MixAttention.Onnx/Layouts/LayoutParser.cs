using System.Globalization;

namespace MixAttention.Onnx.Layouts;

/// <summary>
/// Turns a <c>--layout</c> value into a validated <see cref="MixAttentionLayout"/>. The value is, in this order:
/// inline JSON (starts with <c>{</c>); a preset name (<see cref="LayoutPresets"/>); a path to a JSON file (exists, or
/// ends in <c>.json</c>, or contains a path separator); otherwise a compact string.
/// Every failure is a <see cref="LayoutException"/>.
/// </summary>
public static class LayoutParser
{
    /// <summary>Parses, scales or loads <paramref name="spec"/> and validates it against the model.</summary>
    /// <exception cref="LayoutException">The spec cannot be read or the layout is not valid for the model.</exception>
    public static MixAttentionLayout Parse(string spec, LayoutContext ctx)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(ctx);
        var s = spec.Trim();
        if (s.Length == 0)
            throw new LayoutException(LayoutRule.UnknownSpec,
                $"empty layout; give a preset ({PresetList}), a compact string such as 0_1s_1s_3s or a JSON file");
        if (s[0] == '{')
            return Validated(LayoutJson.Read(s, "custom", LayoutOrigin.Json, spec), ctx);
        if (LayoutPresets.TryGet(s, out var preset))
            return preset.Build(ctx);
        if (LooksLikePath(s))
            return ParseJsonFile(s, ctx);
        if (char.IsAsciiLetter(s[0]) && s.Length > 1 && !s.Contains('_'))
            throw new LayoutException(LayoutRule.UnknownSpec,
                $"unknown layout '{Shorten(s)}': not a preset ({PresetList}), not a JSON file, not a compact string");
        return ParseCompact(s, ctx);
    }

    /// <summary>Parses a compact string and validates it.</summary>
    /// <exception cref="LayoutException">A malformed token (naming its position), a missing window, or an invalid layout.</exception>
    public static MixAttentionLayout ParseCompact(string compact, LayoutContext ctx)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        var tokens = Tokenize(compact);
        if (tokens.Count != ctx.LayerCount)
            throw new LayoutException(LayoutRule.LayerCount,
                $"compact layout has {tokens.Count} token{(tokens.Count == 1 ? "" : "s")} but the model has {ctx.LayerCount} layers: give exactly one token per layer");
        var layers = new LayerAssignment[tokens.Count];
        for (var i = 0; i < tokens.Count; i++)
        {
            var t = tokens[i];
            var window = !t.Sliding ? 0 : t.Window ?? ctx.SlidingWindowFor(i, $"token {i} '{t.Text}'");
            layers[i] = new LayerAssignment(i, t.Source, window);
        }
        return Validated(new MixAttentionLayout(layers, "custom", LayoutOrigin.CompactString, compact), ctx);
    }

    /// <summary>Reads a JSON layout file and validates it.</summary>
    /// <exception cref="LayoutException">The file is missing or unreadable, not a version-1 layout, or not valid for the model.</exception>
    public static MixAttentionLayout ParseJsonFile(string path, LayoutContext ctx)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(ctx);
        string text;
        try
        {
            if (!File.Exists(path))
                throw new LayoutException(LayoutRule.UnknownSpec, $"layout file '{Shorten(path)}' does not exist");
            // A regular file of at most 16 MiB: a FIFO or device named as the layout is refused, not read forever.
            text = Onnx.SafeFiles.ReadAllText(path, "layout file", Onnx.SafeFiles.MaxConfigBytes, followLink: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException or Onnx.OnnxFormatException)
        {
            throw new LayoutException(LayoutRule.MalformedJson, $"cannot read layout file '{Shorten(path)}': {e.Message}", null, e);
        }
        var name = Path.GetFileNameWithoutExtension(path);
        return Validated(LayoutJson.Read(text, string.IsNullOrEmpty(name) ? "custom" : name, LayoutOrigin.JsonFile, path), ctx);
    }

    /// <summary>One parsed compact-string token.</summary>
    /// <param name="Text">The token as written.</param>
    /// <param name="Source">The KV source layer index.</param>
    /// <param name="Sliding">True for an <c>s</c> suffix.</param>
    /// <param name="Window">The explicit window of an <c>NsW</c> token; null when the context supplies it.</param>
    internal sealed record Token(string Text, int Source, bool Sliding, int? Window);

    /// <summary>
    /// Splits a compact string into tokens without looking at the model. Grammar per token: <c>N</c> (global),
    /// <c>Ns</c> (sliding, window from the context) or <c>NsW</c> (sliding with window W &gt; 0); N, W decimal.
    /// </summary>
    /// <exception cref="LayoutException">A malformed token; the message and <see cref="LayoutException.Layer"/> give its position.</exception>
    internal static IReadOnlyList<Token> Tokenize(string compact)
    {
        ArgumentNullException.ThrowIfNull(compact);
        var parts = compact.Trim().Split('_');
        var tokens = new Token[parts.Length];
        for (var i = 0; i < parts.Length; i++)
            tokens[i] = ParseToken(parts[i], i);
        return tokens;
    }

    private static Token ParseToken(string t, int position)
    {
        if (t.Length == 0)
            throw Malformed(position, t, "is empty (two '_' in a row, or a leading/trailing '_')");
        var p = 0;
        while (p < t.Length && char.IsAsciiDigit(t[p]))
            p++;
        if (p == 0)
        {
            var what = t[0] switch
            {
                '-' => "has a negative or signed index; layer indices are 0, 1, 2, …",
                's' or 'S' => "has no layer index before 's' (write e.g. 3s)",
                _ => $"starts with '{Printable(t[0])}'; expected a layer index",
            };
            throw Malformed(position, t, what);
        }
        if (!int.TryParse(t.AsSpan(0, p), NumberStyles.None, CultureInfo.InvariantCulture, out var source))
            throw Malformed(position, t, "has a layer index too large to be a layer");
        if (p == t.Length)
            return new Token(t, source, false, null);
        if (t[p] != 's')
            throw Malformed(position, t, $"has '{Printable(t[p])}' at character {p}; expected 's' (sliding) or the end of the token");
        p++;
        if (p == t.Length)
            return new Token(t, source, true, null);
        var w0 = p;
        while (p < t.Length && char.IsAsciiDigit(t[p]))
            p++;
        if (p != t.Length)
            throw Malformed(position, t, $"has '{Printable(t[p])}' at character {p}; after 's' only a window size may follow (e.g. 3s1024)");
        if (!int.TryParse(t.AsSpan(w0), NumberStyles.None, CultureInfo.InvariantCulture, out var window))
            throw Malformed(position, t, "has a window too large to be a window");
        if (window == 0)
            throw new LayoutException(LayoutRule.InvalidWindow,
                $"compact layout: token {position} '{t}': a sliding window must be > 0 (write {source} for a global layer)", position);
        return new Token(t, source, true, window);
    }

    private static LayoutException Malformed(int position, string token, string what) =>
        new(LayoutRule.MalformedToken,
            $"compact layout: token {position} '{Shorten(token)}' {what}; each token is N, Ns or NsW (N = layer whose cache it reads, s = sliding, W = window)",
            position);

    private static MixAttentionLayout Validated(MixAttentionLayout layout, LayoutContext ctx)
    {
        LayoutValidator.Validate(layout, ctx);
        return layout;
    }

    private static bool LooksLikePath(string s) =>
        s.EndsWith(".json", StringComparison.OrdinalIgnoreCase)
        || s.Contains('/') || s.Contains('\\')
        || SafeExists(s);

    private static bool SafeExists(string s)
    {
        try
        {
            return File.Exists(s);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException)
        {
            return false;
        }
    }

    private static string PresetList => string.Join(", ", LayoutPresets.All.Select(p => p.Name));

    private static string Printable(char c) => char.IsControl(c) || char.IsWhiteSpace(c) ? $"\\u{(int)c:x4}" : c.ToString();

    private static string Shorten(string s)
    {
        var clean = new string(s.Select(c => char.IsControl(c) ? '?' : c).ToArray());
        return clean.Length <= 60 ? clean : clean[..57] + "...";
    }
}
