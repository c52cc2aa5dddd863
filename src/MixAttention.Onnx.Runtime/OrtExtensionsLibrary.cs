namespace MixAttention.Onnx.Runtime;

/// <summary>
/// Locates <c>libortextensions.so</c> (NuGet Microsoft.ML.OnnxRuntime.Extensions; the package ships only the native
/// library on Linux, no managed API): next to the application, or under <c>runtimes/&lt;rid&gt;/native</c>.
/// </summary>
public static class OrtExtensionsLibrary
{
    /// <summary>File name on Linux.</summary>
    public const string FileName = "libortextensions.so";

    /// <summary>The path, or null when the library is not deployed.</summary>
    public static string? Find()
    {
        var dirs = new[] { AppContext.BaseDirectory, Path.GetDirectoryName(typeof(OrtExtensionsLibrary).Assembly.Location) ?? "" }
            .Where(d => d.Length > 0).Distinct();
        string rid = System.Runtime.InteropServices.RuntimeInformation.RuntimeIdentifier;
        string arch = System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture == System.Runtime.InteropServices.Architecture.Arm64 ? "linux-arm64" : "linux-x64";
        foreach (var d in dirs)
            foreach (var candidate in new[] { Path.Combine(d, FileName), Path.Combine(d, "runtimes", rid, "native", FileName), Path.Combine(d, "runtimes", arch, "native", FileName) })
                if (File.Exists(candidate)) return candidate;
        return null;
    }

    /// <summary>The path, or a clear error.</summary>
    public static string GetRequired() => Find() ?? throw new MixAttentionException(
        $"{FileName} (ONNX Runtime Extensions) was not found next to the application; reference the Microsoft.ML.OnnxRuntime.Extensions package.");
}
