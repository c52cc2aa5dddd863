namespace MixAttention.Onnx.Cli;

/// <summary>
/// A small file a verb writes after a long run (eval's plot, tune's layout): its path is checked before the run, so a
/// typo costs seconds, not the run, and the file is written whole or not at all.
/// </summary>
internal static class OutputFile
{
    /// <summary>Throws a user error naming <paramref name="flag"/> unless the file can be created: its folder exists and it is not a folder.</summary>
    public static void CheckBeforeRun(string path, string flag)
    {
        string full;
        try { full = Path.GetFullPath(path); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new MixAttentionException($"{flag} '{path}' is not a usable file path: {e.Message}");
        }
        if (Directory.Exists(full)) throw new MixAttentionException($"{flag} '{path}' is a folder; name a file.");
        var folder = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(folder)) throw new MixAttentionException($"{flag} '{path}': the folder '{folder}' does not exist.");
    }

    /// <summary>Writes beside the target and renames over it, so a reader never sees half a file; the temporary goes on failure.</summary>
    public static void WriteWhole(string path, string text)
    {
        var full = Path.GetFullPath(path);
        var temp = full + ".tmp";
        try
        {
            File.WriteAllText(temp, text);
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }
}
