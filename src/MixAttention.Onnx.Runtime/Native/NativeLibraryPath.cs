namespace MixAttention.Onnx.Runtime.Native;

/// <summary>
/// Locates <c>libmixattention_ops.so</c>, the native library with the <c>com.mixattention</c> custom ops
/// (docs/ops.md). The build (Native/NativeOps.targets) copies it next to this assembly; pass
/// <see cref="Path"/> to <c>SessionOptions.RegisterCustomOpLibrary</c>.
/// </summary>
public static class NativeLibraryPath
{
    /// <summary>File name of the op library on Linux.</summary>
    public const string FileName = "libmixattention_ops.so";

    /// <summary>
    /// Full path of the library: next to this assembly (the build copies it there), else under
    /// <c>runtimes/linux-x64/native/</c> beside it (the NuGet layout, for hosts that do not flatten it).
    /// The first candidate is returned when neither exists.
    /// </summary>
    public static string Path { get; } = Locate();

    private static string Locate()
    {
        var dir = AssemblyDirectory();
        var beside = System.IO.Path.Combine(dir, FileName);
        var nuget = System.IO.Path.Combine(dir, "runtimes", "linux-x64", "native", FileName);
        return !File.Exists(beside) && File.Exists(nuget) ? nuget : beside;
    }

    /// <summary>True when the library file is present at <see cref="Path"/>.</summary>
    public static bool Exists => File.Exists(Path);

    private static string AssemblyDirectory()
    {
        var location = typeof(NativeLibraryPath).Assembly.Location;
        var dir = string.IsNullOrEmpty(location) ? null : System.IO.Path.GetDirectoryName(location);
        return string.IsNullOrEmpty(dir) ? AppContext.BaseDirectory : dir;
    }

    /// <summary>Returns <see cref="Path"/>, or throws with a build hint when the file is missing.</summary>
    /// <exception cref="FileNotFoundException">The library was not built or not copied to the output folder.</exception>
    public static string GetRequired() =>
        Exists
            ? Path
            : throw new FileNotFoundException(
                $"{FileName} not found next to the application; build MixAttention.Onnx.Runtime on Linux (needs cmake and g++).",
                Path);
}
