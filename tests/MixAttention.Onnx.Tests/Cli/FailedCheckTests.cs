using System.Security.Cryptography;
using Google.Protobuf;
using MixAttention.Onnx.Cli;
using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Onnx.Proto;
using MixAttention.Onnx.Plan;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Cli;

/// <summary>
/// <c>convert</c>'s check after writing: a written model that fails it is removed with the data files it wrote (here a
/// hard link to the source's weights), so nothing half-usable stays on disk, and the source is left as it was.
/// </summary>
[TestClass]
public sealed class FailedCheckTests
{
    private static string Hash(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));

    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void AFailedCheckRemovesTheOutputAndItsDataButNotTheSource(bool linkWeights)
    {
        var sourceDir = TestPaths.TempDir();
        var source = Path.Combine(sourceDir, "m.onnx");
        OnnxModel.Load(TestPaths.Fixture("llama-gqa")).Save(source, new OnnxSaveOptions { ExternalizeAtLeastBytes = 1024 });
        var sourceFiles = Directory.GetFiles(sourceDir).Order(StringComparer.Ordinal).Select(f => $"{Path.GetFileName(f)} {Hash(f)}").ToList();
        Assert.HasCount(2, sourceFiles, "the source has its weights in a data file");

        var outputDir = TestPaths.TempDir();
        var output = Path.Combine(outputDir, "model.onnx");
        var report = Converter.Convert(source, output, new ConversionOptions { Layout = "native", LinkWeights = linkWeights });
        Assert.IsGreaterThan(1, Directory.GetFiles(outputDir).Length, "the output has a data file of its own");

        // What a converter bug would write: a graph that drops a cache output its plan names (metadata kept, so the
        // output still records its data files as its own).
        var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(output));
        var present = CachePlan.FromModel(proto)!.Caches[0].PresentKey;
        proto.Graph.Output.Remove(proto.Graph.Output.Single(o => o.Name == present));
        File.WriteAllBytes(output, proto.ToByteArray());

        var e = Assert.ThrowsExactly<InvalidOperationException>(() => ConvertVerb.RunCheck(report, "structure"));
        StringAssert.Contains(e.Message, "the output was removed");
        StringAssert.Contains(e.Message, "is not whole");
        Assert.IsEmpty(Directory.GetFileSystemEntries(outputDir), "nothing of the output stays on disk");
        CollectionAssert.AreEqual(sourceFiles, Directory.GetFiles(sourceDir).Order(StringComparer.Ordinal).Select(f => $"{Path.GetFileName(f)} {Hash(f)}").ToList(),
            "the source and its weights are untouched");
        Assert.IsNotNull(OnnxModel.Load(source));
    }
}
