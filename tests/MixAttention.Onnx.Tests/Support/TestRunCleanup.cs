namespace MixAttention.Onnx.Tests.Support;

/// <summary>Deletes this run's temporary folders (<see cref="TestPaths.RunTempRoot"/>) once every test has run.</summary>
[TestClass]
public sealed class TestRunCleanup
{
    [AssemblyCleanup]
    public static void DeleteRunTempRoot()
    {
        // Best effort: a file a crashed native session still maps must not fail the run; the next run's root is new.
        try
        {
            if (Directory.Exists(TestPaths.RunTempRoot)) Directory.Delete(TestPaths.RunTempRoot, recursive: true);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
