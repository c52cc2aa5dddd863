using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace MixAttention.Onnx.Onnx;

/// <summary>
/// File access for paths an untrusted model names (external data, config.json, tokenizer files) and for outputs that
/// must never land on an input: real paths (every symbolic link resolved) for containment checks, identities (device
/// and inode) for "is this the same file", and opens that refuse links, FIFOs and devices before reading a byte.
/// Linux (and macOS, whose <c>realpath</c> is the same); elsewhere the checks fall back to what .NET offers.
/// </summary>
internal static class SafeFiles
{
    /// <summary>Largest config.json / genai_config.json / tokenizer_config.json read.</summary>
    public const long MaxConfigBytes = 16L << 20;
    /// <summary>Largest tokenizer.json read.</summary>
    public const long MaxTokenizerBytes = 256L << 20;

    private static readonly bool Posix = OperatingSystem.IsLinux() || OperatingSystem.IsMacOS();

    [DllImport("libc", EntryPoint = "realpath", SetLastError = true)]
    private static extern IntPtr RealPathNative([MarshalAs(UnmanagedType.LPUTF8Str)] string path, IntPtr resolved);

    [DllImport("libc", EntryPoint = "free")]
    private static extern void Free(IntPtr p);

    [DllImport("libc", EntryPoint = "open", SetLastError = true)]
    private static extern int OpenNative([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, int mode);

    [DllImport("libc", EntryPoint = "statx", SetLastError = true)]
    private static extern int StatxNative(int dirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, byte[] buffer);

    private const int AtFdCwd = -100, AtSymlinkNoFollow = 0x100, AtEmptyPath = 0x1000;
    private const int ONonBlock = 0x800, OCloExec = 0x80000;
    private static int ONoFollow => RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm ? 0x8000 : 0x20000;

    /// <summary>Throws for a path that cannot name a file: empty, or with a NUL character (the OS would cut it there).</summary>
    public static void CheckPath(string? path, string what)
    {
        if (string.IsNullOrWhiteSpace(path))
            throw new MixAttentionException($"{what}: the path is empty.");
        if (path.Contains('\0'))
            throw new MixAttentionException($"{what}: the path '{path.Replace("\0", "\\0")}' contains a NUL character.");
    }

    /// <summary>The path with every symbolic link, <c>.</c> and <c>..</c> resolved; null when it does not exist.</summary>
    public static string? RealPath(string path)
    {
        var full = Path.GetFullPath(path);
        if (!Posix) return File.Exists(full) || Directory.Exists(full) ? full : null;
        IntPtr p;
        try { p = RealPathNative(full, IntPtr.Zero); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return File.Exists(full) || Directory.Exists(full) ? full : null; }
        if (p == IntPtr.Zero) return null;
        try { return Marshal.PtrToStringUTF8(p); }
        finally { Free(p); }
    }

    /// <summary>
    /// The real path of <paramref name="path"/> when it names an existing file, or — when only its folder exists — the
    /// real path of the folder joined with the name; null when the folder does not exist either.
    /// </summary>
    public static string? RealPathOrParent(string path)
    {
        var full = Path.GetFullPath(path);
        if (RealPath(full) is { } real && Stat(full, follow: false) is { IsSymlink: false }) return real;
        var dir = Path.GetDirectoryName(full);
        return dir is not null && RealPath(dir) is { } realDir ? Path.Combine(realDir, Path.GetFileName(full)) : null;
    }

    /// <summary>Type, size and identity of what <paramref name="path"/> names (the link itself unless <paramref name="follow"/>); null when nothing is there.</summary>
    public static FileIdentity? Stat(string path, bool follow)
    {
        if (!Posix) return ManagedStat(path, follow);
        var buffer = new byte[256];
        int rc;
        try { rc = StatxNative(AtFdCwd, path, follow ? 0 : AtSymlinkNoFollow, 0x7ff, buffer); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return ManagedStat(path, follow); }
        return rc != 0 ? null : Decode(buffer);
    }

    private static FileIdentity? StatFd(SafeFileHandle fd)
    {
        var buffer = new byte[256];
        int rc;
        try { rc = StatxNative((int)fd.DangerousGetHandle(), "", AtEmptyPath, 0x7ff, buffer); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }
        return rc != 0 ? null : Decode(buffer);
    }

    private static FileIdentity Decode(byte[] b)
    {
        uint mode = BitConverter.ToUInt16(b, 0x1C);
        ulong ino = BitConverter.ToUInt64(b, 0x20);
        long size = BitConverter.ToInt64(b, 0x28);
        ulong dev = ((ulong)BitConverter.ToUInt32(b, 0x88) << 32) | BitConverter.ToUInt32(b, 0x8C);
        return new FileIdentity(dev, ino, mode, size);
    }

    private static FileIdentity? ManagedStat(string path, bool follow)
    {
        var info = new FileInfo(path);
        if (info.Exists)
        {
            if (!follow && info.LinkTarget is not null) return new FileIdentity(0, (ulong)path.GetHashCode(), 0xA000, 0);
            return new FileIdentity(0, (ulong)Path.GetFullPath(path).GetHashCode(), 0x8000, info.Length);
        }
        return Directory.Exists(path) ? new FileIdentity(0, (ulong)Path.GetFullPath(path).GetHashCode(), 0x4000, 0) : null;
    }

    /// <summary>True when <paramref name="realPath"/> lies strictly inside the folder <paramref name="realRoot"/> (both real paths).</summary>
    public static bool IsInside(string realPath, string realRoot)
    {
        var root = realRoot.EndsWith(Path.DirectorySeparatorChar) ? realRoot : realRoot + Path.DirectorySeparatorChar;
        return realPath.StartsWith(root, StringComparison.Ordinal);
    }

    /// <summary>
    /// Opens a regular file for reading, never following a link at its last component (<c>O_NOFOLLOW</c>) when
    /// <paramref name="followLink"/> is false, never blocking on a FIFO (<c>O_NONBLOCK</c>), and checks — on the open
    /// file, so nothing can be swapped in between — that it is a regular file of at most <paramref name="maxBytes"/>.
    /// </summary>
    public static FileStream OpenRegular(string path, string what, long maxBytes = long.MaxValue, bool followLink = false)
    {
        if (!Posix)
        {
            var info = new FileInfo(path);
            if (!info.Exists) throw new OnnxFormatException($"{what} '{path}' does not exist.");
            if (info.Length > maxBytes) throw new OnnxFormatException($"{what} '{path}' is {info.Length:N0} bytes, more than the {maxBytes:N0} allowed.");
            return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        }
        int fd;
        try { fd = OpenNative(path, OCloExec | ONonBlock | (followLink ? 0 : ONoFollow), 0); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16); }
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            var lstat = Stat(path, follow: false);
            throw new OnnxFormatException(errno switch
            {
                2 => $"{what} '{path}' does not exist.",
                40 or 20 when lstat is { IsSymlink: true } => $"{what} '{path}' is a symbolic link; refusing to follow it.",
                13 or 1 => $"{what} '{path}' cannot be read (permission denied).",
                _ => lstat is { IsSymlink: true } && !followLink ? $"{what} '{path}' is a symbolic link; refusing to follow it."
                    : $"{what} '{path}' cannot be opened (errno {errno}).",
            });
        }
        var handle = new SafeFileHandle((IntPtr)fd, ownsHandle: true);
        try
        {
            var id = StatFd(handle);
            if (id is { } f && !f.IsRegular)
                throw new OnnxFormatException($"{what} '{path}' is {f.Kind}, not a regular file; refusing to read it.");
            if (id is { } g && g.Size > maxBytes)
                throw new OnnxFormatException($"{what} '{path}' is {g.Size:N0} bytes, more than the {maxBytes:N0} allowed.");
            return new FileStream(handle, FileAccess.Read, 1 << 16);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Reads a regular file of at most <paramref name="maxBytes"/> (see <see cref="OpenRegular"/>).</summary>
    public static byte[] ReadAllBytes(string path, string what, long maxBytes, bool followLink = false)
    {
        using var stream = OpenRegular(path, what, maxBytes, followLink);
        using var copy = new MemoryStream();
        var buffer = new byte[1 << 16];
        int n;
        while ((n = stream.Read(buffer, 0, buffer.Length)) > 0)
        {
            if (copy.Length + n > maxBytes) throw new OnnxFormatException($"{what} '{path}' is longer than the {maxBytes:N0} bytes allowed.");
            copy.Write(buffer, 0, n);
        }
        return copy.ToArray();
    }

    /// <summary>Reads a regular file of at most <paramref name="maxBytes"/> as UTF-8 text (see <see cref="OpenRegular"/>).</summary>
    public static string ReadAllText(string path, string what, long maxBytes, bool followLink = false)
    {
        using var stream = OpenRegular(path, what, maxBytes, followLink);
        using var reader = new StreamReader(stream, System.Text.Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        var buffer = new char[1 << 16];
        var text = new System.Text.StringBuilder();
        long chars = 0;
        int n;
        while ((n = reader.Read(buffer, 0, buffer.Length)) > 0)
        {
            chars += n;
            if (chars > maxBytes) throw new OnnxFormatException($"{what} '{path}' is longer than the {maxBytes:N0} bytes allowed.");
            text.Append(buffer, 0, n);
        }
        return text.ToString();
    }

    /// <summary>
    /// A file beside a model that the model's folder may hold (config.json, tokenizer.json, …): its path when it exists,
    /// after checking that its real path stays inside <paramref name="folder"/> (a link out of the folder is refused
    /// unless <paramref name="allowOutside"/>: a Hugging Face cache snapshot links every file into ../../blobs);
    /// null when absent.
    /// </summary>
    public static string? SideFile(string folder, string name, string what, bool allowOutside = false)
    {
        var path = Path.Combine(folder, name);
        if (Stat(path, follow: false) is null) return null;
        var realRoot = RealPath(folder) ?? Path.GetFullPath(folder);
        var real = RealPath(path);
        if (real is null)
            throw new OnnxFormatException($"{what} '{path}' is a symbolic link to nothing.");
        if (!allowOutside && !IsInside(real, realRoot))
            throw new OnnxFormatException($"{what} '{path}' leads outside the folder '{folder}' (to '{real}'); refusing to read it.");
        return real;
    }
}
