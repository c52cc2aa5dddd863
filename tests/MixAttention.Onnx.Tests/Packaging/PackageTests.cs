using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Packaging;

/// <summary>
/// Issues 8 and 21: tools/package-smoke.sh packs MixAttention.Onnx (CPU), MixAttention.Onnx.Gpu, MixAttention.Onnx.Chat
/// and the mixattn tool into a local feed, builds a fresh console project against each library package (the QuickStart
/// sample: convert, decode, stream, memory; the GPU package's sample runs on CPU here), installs and runs the tool, and
/// builds fresh projects on the chat package alone and paired with the GPU package (the ChatClient sample: the demo
/// model through IChatClient, whole and streamed). About 90 s with a warm NuGet cache, so it runs everywhere; it needs
/// bash and python3.
/// </summary>
[TestClass]
public sealed partial class PackageTests
{
    /// <summary>nuget.org refuses packages over 250 MB.</summary>
    private const long NuGetOrgLimit = 250L * 1000 * 1000;

    /// <summary>Size limits (bytes) per package id: the library packages carry only our assemblies and op library (ORT
    /// comes as a dependency); the GPU one leaves room for the CUDA kernels; the tool must stay without ORT's CUDA
    /// provider (about 280 MB uncompressed), which alone would put it near nuget.org's limit; the chat package carries only
/// its assembly (with the embedded Jinja engine) and the licence notice.</summary>
    private static readonly Dictionary<string, long> SizeLimits = new()
    {
        ["MixAttention.Onnx"] = 8L << 20,
        ["MixAttention.Onnx.Gpu"] = 150L << 20,
        ["mixattn"] = 64L << 20,
        ["MixAttention.Onnx.Chat"] = 1L << 20,
    };

    [GeneratedRegex(@"^smoke: size (\S+) (\d+) limit (\d+)$", RegexOptions.Multiline)]
    private static partial Regex SizeLine();

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
                     && File.Exists(Path.Combine(TestPaths.RepoRoot, "src", "MixAttention.Onnx.Runtime", "bin", "Release", "net10.0", "libmixattention_ops.so"))
                     && File.Exists(Path.Combine(TestPaths.RepoRoot, "src", "MixAttention.Onnx.Chat", "bin", "Release", "net10.0", "MixAttention.Onnx.Chat.dll"));
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
                     "smoke: console app builds against MixAttention.Onnx.Gpu", "smoke: sample on MixAttention.Onnx.Gpu (CPU execution) ok",
                     "smoke: sample: gpt2-ortattention with its tokenizer", "smoke: dotnet tool install mixattn ok", "smoke: mixattn inspect --json ok",
                     "smoke: mixattn convert --json ok", "smoke: mixattn verify --expect-exact", "smoke: mixattn demo",
                     "smoke: console app builds against MixAttention.Onnx.Chat",
                     "smoke: chat sample: demo model through IChatClient.GetResponseAsync and GetStreamingResponseAsync ok",
                     "smoke: console app builds against MixAttention.Onnx.Chat + MixAttention.Onnx.Gpu (only ORT's CUDA build) ok",
                     "smoke: chat sample on MixAttention.Onnx.Gpu (CPU execution) ok",
                 })
            StringAssert.Contains(output, step);
        // The sample's lines: two sequences decoded together, then the KV memory of the converted model.
        StringAssert.Contains(output, "converted: 2 layers, 2 caches");
        StringAssert.Contains(output, "step 7: tokens");
        StringAssert.Contains(output, "KV memory: ");
        // The chat sample's lines: a reply with its token usage, and the streamed text equal to it.
        StringAssert.Contains(output, "reply: ");
        StringAssert.Contains(output, "streamed: same text");
        // Every package's size, measured by the script, within our limit and nuget.org's.
        var sizes = SizeLine().Matches(output).ToDictionary(m => m.Groups[1].Value, m => long.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture));
        CollectionAssert.AreEquivalent(SizeLimits.Keys.ToList(), sizes.Keys.ToList(), output);
        foreach (var (id, bytes) in sizes)
        {
            Assert.IsTrue(bytes > 0, $"{id}: empty package");
            Assert.IsTrue(bytes <= SizeLimits[id], $"{id}: {bytes:N0} bytes, over the limit of {SizeLimits[id]:N0}");
            Assert.IsTrue(bytes < NuGetOrgLimit, $"{id}: {bytes:N0} bytes, over nuget.org's 250 MB");
        }
    }
}
