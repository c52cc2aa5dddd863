namespace MixAttention.Onnx.Tests.Support;

/// <summary>Locations of the repository's test inputs, found from the test assembly upwards.</summary>
public static class TestPaths
{
    private static readonly Lazy<string> Root = new(() =>
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "MixAttention.Onnx.sln")))
            dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("Cannot find the repository root (MixAttention.Onnx.sln) above " + AppContext.BaseDirectory);
    });

    /// <summary>The repository root.</summary>
    public static string RepoRoot => Root.Value;

    /// <summary>graphs/ folder with the fixtures.</summary>
    public static string Graphs => Path.Combine(RepoRoot, "graphs");

    /// <summary>The model file of a fixture folder under graphs/.</summary>
    public static string Fixture(string name) => Path.Combine(Graphs, name, "model.onnx");

    /// <summary>A fresh temporary folder, deleted by the caller (or left for the OS in /tmp).</summary>
    public static string TempDir()
    {
        var d = Path.Combine(Path.GetTempPath(), "mixattn-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        return d;
    }
}
