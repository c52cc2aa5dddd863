using System.Runtime.InteropServices;

namespace MixAttention.Onnx.Runtime.Native;

/// <summary>
/// Which execution providers an op library has kernels for, from its <c>MixAttentionOpsExecutionProviders</c> export
/// (native/src/register.cc). A CPU-only build registers no CUDA kernels, and ORT then places every attention node of
/// a CUDA session on the CPU without an error: the runtime asks first.
/// </summary>
internal static class OpLibraryProviders
{
    /// <summary>Name of the CUDA execution provider as the library reports it.</summary>
    public const string Cuda = "CUDAExecutionProvider";

    /// <summary>The providers of the library at <paramref name="path"/>; null when it cannot be loaded or predates the export.</summary>
    public static IReadOnlyList<string>? Query(string path)
    {
        if (!NativeLibrary.TryLoad(path, out var lib)) return null;
        try
        {
            if (!NativeLibrary.TryGetExport(lib, "MixAttentionOpsExecutionProviders", out var export)) return null;
            unsafe
            {
                var text = Marshal.PtrToStringUTF8(((delegate* unmanaged<nint>)export)());
                return text is null ? null : text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            }
        }
        finally
        {
            NativeLibrary.Free(lib);
        }
    }
}
