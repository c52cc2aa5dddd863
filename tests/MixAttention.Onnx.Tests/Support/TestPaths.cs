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

    /// <summary>
    /// The fixtures whose models the repository keeps in graphs/fixtures.tar.br (the exports of one model share their
    /// weights, which a large-window compressor stores once: 5.5 MB in 1.2 MB): unpacked once, with each fixture's
    /// side files (config, provenance) from graphs/NAME and graphs/reference beside them, so the folders behave like
    /// graphs/NAME. <c>tools/fixtures/unpack-fixtures.sh</c> unpacks the same models into graphs/ for people.
    /// </summary>
    private static readonly Lazy<string> Packed = new(() => PackedArchive.Unpack(Path.Combine(Graphs, "fixtures.tar.br"), staging =>
    {
        foreach (var dir in Directory.GetDirectories(staging))
            foreach (var side in Directory.GetFiles(Path.Combine(Graphs, Path.GetFileName(dir))))
                if (Path.GetFileName(side) != "model.onnx") File.Copy(side, Path.Combine(dir, Path.GetFileName(side)));
        foreach (var file in Directory.GetFiles(Path.Combine(Graphs, "reference"), "*", SearchOption.AllDirectories))
        {
            var copy = Path.Combine(staging, "reference", Path.GetRelativePath(Path.Combine(Graphs, "reference"), file));
            Directory.CreateDirectory(Path.GetDirectoryName(copy)!);
            File.Copy(file, copy);
        }
    }));

    /// <summary>
    /// The folder of a fixture: graphs/NAME when it holds its model, else the unpacked copy of a packed one, or the
    /// folder of a fixture made when the tests run (<see cref="GeneratedFixtures"/>).
    /// </summary>
    public static string FixtureDir(string name)
    {
        if (GeneratedFixtures.Directory(name) is { } generated) return generated;
        var committed = Path.Combine(Graphs, name);
        if (File.Exists(Path.Combine(committed, "model.onnx"))) return committed;
        var packed = Path.Combine(Packed.Value, name);
        return File.Exists(Path.Combine(packed, "model.onnx")) ? packed : committed;
    }

    /// <summary>The model file of a fixture (<see cref="FixtureDir"/>).</summary>
    public static string Fixture(string name) => Path.Combine(FixtureDir(name), "model.onnx");

    /// <summary>Every fixture folder with a model: those under graphs/ and the generated ones.</summary>
    public static IEnumerable<string> FixtureDirectories() =>
        Directory.GetDirectories(Graphs).Select(Path.GetFileName).OfType<string>()
            .Where(name => !GeneratedFixtures.Names.Contains(name)).Select(FixtureDir)
            .Where(d => File.Exists(Path.Combine(d, "model.onnx")))
            .Concat(GeneratedFixtures.Names.Select(FixtureDir));

    /// <summary>
    /// This test run's temporary root, mixattn-tests/run-PID-GUID under the system's temp folder: every
    /// <see cref="TempDir"/> lies below it and <see cref="TestRunCleanup"/> deletes it when the run ends, so repeated
    /// runs do not fill the disk with converted models (they had left gigabytes behind).
    /// </summary>
    public static readonly string RunTempRoot =
        Path.Combine(Path.GetTempPath(), "mixattn-tests", $"run-{Environment.ProcessId}-{Guid.NewGuid():N}");

    /// <summary>A fresh temporary folder below <see cref="RunTempRoot"/>; the caller may delete it earlier.</summary>
    public static string TempDir()
    {
        var d = Path.Combine(RunTempRoot, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        return d;
    }
}
