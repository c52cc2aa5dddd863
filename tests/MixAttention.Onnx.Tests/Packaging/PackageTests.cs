using System.Diagnostics;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Packaging;

/// <summary>
/// Issue 8: tools/package-smoke.sh packs MixAttention.Onnx and the mixattn tool into a local feed, builds a fresh
/// console project against the package (the QuickStart sample: convert, decode, stream, memory), and installs and
/// runs the tool. About 40 s with a warm NuGet cache, so it runs everywhere; it needs bash and python3.
/// </summary>
[TestClass]
public sealed class PackageTests
{
    [TestMethod]
    [TestCategory("Slow")]
    public void PackagesRestoreIntoAFreshProjectAndTheToolRuns()
    {
        var script = Path.Combine(TestPaths.RepoRoot, "tools", "package-smoke.sh");
        Assert.IsTrue(File.Exists(script), script);
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(script);
        // The suite runs after a Release build of the solution: pack that build instead of building again.
        bool built = File.Exists(Path.Combine(TestPaths.RepoRoot, "tools", "MixAttention.Onnx.Cli", "bin", "Release", "net10.0", "mixattn.dll"))
                     && File.Exists(Path.Combine(TestPaths.RepoRoot, "src", "MixAttention.Onnx.Runtime", "bin", "Release", "net10.0", "libmixattention_ops.so"));
        psi.Environment["MIXATTN_SMOKE_NO_BUILD"] = built ? "1" : "0";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(540_000)) { p.Kill(true); Assert.Fail("package-smoke.sh did not finish in 9 minutes"); }
        var output = stdout.Result + stderr.Result;
        Assert.AreEqual(0, p.ExitCode, output);
        StringAssert.Contains(output, "package smoke: PASS");
        foreach (var step in new[]
                 {
                     "smoke: pack", "smoke: console app builds against MixAttention.Onnx", "smoke: sample: mistral-torchscript converted (native) and decoded ok",
                     "smoke: sample: gpt2-ortattention with its tokenizer", "smoke: dotnet tool install mixattn ok", "smoke: mixattn inspect --json ok",
                     "smoke: mixattn convert --json ok", "smoke: mixattn verify --expect-exact", "smoke: mixattn demo",
                 })
            StringAssert.Contains(output, step);
        // The sample's lines: two sequences decoded together, then the KV memory of the converted model.
        StringAssert.Contains(output, "converted: 2 layers, 2 caches");
        StringAssert.Contains(output, "step 7: tokens");
        StringAssert.Contains(output, "KV memory: ");
    }
}
