using System.Formats.Tar;
using System.IO.Compression;

namespace MixAttention.Onnx.Tests.Support;

/// <summary>
/// Brotli-compressed files the repository keeps instead of large fixtures (graphs/*.tar.br, graphs/**/*.br: random
/// weights of several exports of one model, a long tokenizer vocabulary), unpacked once into the test output folder.
/// One folder per archive version (its size and time), made in a staging folder and moved into place, so a run never
/// sees a half-unpacked archive.
/// </summary>
public static class PackedArchive
{
    /// <summary>
    /// The folder holding <paramref name="archive"/> (a .tar.br) unpacked; <paramref name="complete"/> may add files
    /// to the staging folder before it is published.
    /// </summary>
    public static string Unpack(string archive, Action<string>? complete = null) =>
        Publish(archive, staging =>
        {
            using (var file = File.OpenRead(archive))
            using (var brotli = new BrotliStream(file, CompressionMode.Decompress))
                TarFile.ExtractToDirectory(brotli, staging, overwriteFiles: true);
            complete?.Invoke(staging);
        });

    /// <summary>The folder holding <paramref name="file"/> (NAME.br) decompressed to NAME; <paramref name="complete"/> as above.</summary>
    public static string Decompress(string file, Action<string>? complete = null) =>
        Publish(file, staging =>
        {
            using (var input = File.OpenRead(file))
            using (var brotli = new BrotliStream(input, CompressionMode.Decompress))
            using (var output = File.Create(Path.Combine(staging, Path.GetFileNameWithoutExtension(file))))
                brotli.CopyTo(output);
            complete?.Invoke(staging);
        });

    /// <summary>The member files of a .tar.br archive, relative to its root ('/'-separated).</summary>
    public static IReadOnlyList<string> Members(string archive)
    {
        var names = new List<string>();
        using var file = File.OpenRead(archive);
        using var brotli = new BrotliStream(file, CompressionMode.Decompress);
        using var tar = new TarReader(brotli);
        while (tar.GetNextEntry() is { } entry)
            if (entry.EntryType is TarEntryType.RegularFile or TarEntryType.V7RegularFile)
                names.Add(entry.Name.TrimStart('.', '/'));
        return names;
    }

    private static string Publish(string source, Action<string> fill)
    {
        var info = new FileInfo(source);
        var target = Path.Combine(AppContext.BaseDirectory, "unpacked",
            $"{info.Name}-{info.LastWriteTimeUtc.Ticks}-{info.Length}");
        if (File.Exists(Path.Combine(target, ".complete"))) return target;
        var staging = target + "." + Guid.NewGuid().ToString("N");
        Directory.CreateDirectory(staging);
        fill(staging);
        File.WriteAllText(Path.Combine(staging, ".complete"), "");
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        try { Directory.Move(staging, target); }
        catch (IOException) when (File.Exists(Path.Combine(target, ".complete"))) { Directory.Delete(staging, recursive: true); }
        return target;
    }
}
