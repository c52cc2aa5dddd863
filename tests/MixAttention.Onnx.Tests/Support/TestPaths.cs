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

    /// <summary>The folder of a fixture: graphs/NAME, or the folder of a fixture made when the tests run (<see cref="GeneratedFixtures"/>).</summary>
    public static string FixtureDir(string name) => GeneratedFixtures.Directory(name) ?? Path.Combine(Graphs, name);

    /// <summary>The model file of a fixture (<see cref="FixtureDir"/>).</summary>
    public static string Fixture(string name) => Path.Combine(FixtureDir(name), "model.onnx");

    /// <summary>Every fixture folder with a model: those under graphs/ and the generated ones.</summary>
    public static IEnumerable<string> FixtureDirectories() =>
        Directory.GetDirectories(Graphs).Where(d => File.Exists(Path.Combine(d, "model.onnx")))
            .Concat(GeneratedFixtures.Names.Select(FixtureDir));

    /// <summary>A fresh temporary folder, deleted by the caller (or left for the OS in /tmp).</summary>
    public static string TempDir()
    {
        var d = Path.Combine(Path.GetTempPath(), "mixattn-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        return d;
    }
}
