using System.Runtime.InteropServices;

namespace MixAttention.Onnx.Interop;

/// <summary>POSIX hard links (no managed API exists): lets a converted model share its weights file with the source.</summary>
internal static class HardLink
{
    [DllImport("libc", SetLastError = true, EntryPoint = "link")]
    private static extern int Link(string oldPath, string newPath);

    /// <summary>Creates <paramref name="link"/> pointing at <paramref name="target"/>'s data; false where not possible (other file system, Windows).</summary>
    public static bool TryCreate(string target, string link)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) return false;
        try { return Link(target, link) == 0; }
        catch (DllNotFoundException) { return false; }
        catch (EntryPointNotFoundException) { return false; }
    }
}
