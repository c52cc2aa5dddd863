using System.Security.Cryptography;
using Google.Protobuf;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Reliability;

[TestClass]
public sealed class AtomicOutputTests
{
    /// <summary>
    /// What a reader of the output folder sees: the model (external-data file names normalized away) and the
    /// content of every data file it references. Null when the model does not load with its data.
    /// </summary>
    private static string? Signature(string modelPath)
    {
        OnnxModel model;
        try { model = OnnxModel.Load(modelPath); }
        catch (OnnxFormatException) { return null; }
        var files = model.ExternalTensors().Select(t => model.ResolveExternalPath(t.Ref, t.Tensor.Name)).Distinct().ToList();
        var proto = model.Proto.Clone();
        foreach (var t in ExternalDataRef.AllTensors(proto))
            if (ExternalDataRef.Of(t) is { } r) (r with { Location = "X" }).ApplyTo(t);
        // The record of the data file names this tool wrote goes with the names.
        foreach (var p in proto.MetadataProps.Where(p => p.Key == OnnxModel.WrittenDataKey).ToList()) proto.MetadataProps.Remove(p);
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(proto.ToByteArray());
        foreach (var f in files) sha.AppendData(File.ReadAllBytes(f));
        return Convert.ToHexString(sha.GetHashAndReset());
    }

    /// <summary>Every file in a folder (hidden temporaries included) with the SHA-256 of its bytes.</summary>
    private static string Listing(string dir) => string.Join("\n", Directory.GetFiles(dir).Order(StringComparer.Ordinal)
        .Select(f => $"{Path.GetFileName(f)} {Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f)))}"));

    /// <summary>The temporary files Save writes: the data file's name has ".data." in it, the model's does not.</summary>
    private static bool IsDataTemp(string path) => Path.GetFileName(path).Contains(".data.", StringComparison.Ordinal);

    private static OnnxSaveOptions NewOutput(Func<string, long?>? failAt = null) => new()
    {
        Overwrite = true, ExternalizeAtLeastBytes = 1024, LinkExternalData = false, FailWriteAt = failAt,
    };

    /// <summary>
    /// Replace an existing output (model + external data) and fail the write of the new data file, then of the
    /// new model file, at chosen byte offsets (first byte, second, middle, last). Every time: the save throws,
    /// the output folder holds exactly the old files byte for byte (no temporary, no new data file left), the old
    /// model loads with its data, and the input is untouched. Then an uninterrupted save gives the new model and
    /// removes the old data.
    /// </summary>
    [TestMethod]
    public void AFailedWriteAtAnyOffsetLeavesTheOldOutputIntact()
    {
        var dir = TestPaths.TempDir();
        try
        {
            var (input, _) = SyntheticModel.Write(Path.Combine(dir, "in"), layers: 2, hidden: 256, heads: 4, kvHeads: 2, intermediate: 512, vocab: 1000);
            var inputListing = Listing(Path.GetDirectoryName(input)!);
            var model = OnnxModel.Load(input);

            // The new output written without interruption: its signature and the sizes of its two files.
            var reference = Path.Combine(dir, "reference", "model.onnx");
            model.Save(reference, NewOutput());
            var newSignature = Signature(reference);
            var dataBytes = new FileInfo(reference + ".data").Length;
            var modelBytes = new FileInfo(reference).Length;
            Assert.IsGreaterThan(1L << 20, dataBytes, "the data file is too small to fail in its middle");

            var points = new List<(bool Data, long Offset)>();
            foreach (var data in new[] { true, false })
            {
                var size = data ? dataBytes : modelBytes;
                points.AddRange(new[] { 0, 1, size / 2, size - 1 }.Select(o => (data, o)));
            }
            int i = 0;
            foreach (var (data, offset) in points)
            {
                var outDir = Path.Combine(dir, $"out{i++}");
                var output = Path.Combine(outDir, "model.onnx");
                OnnxModel.Load(TestPaths.Fixture("llama-gqa")).Save(output, new OnnxSaveOptions { ExternalizeAtLeastBytes = 1024 });
                var oldSignature = Signature(output);
                var oldListing = Listing(outDir);
                Assert.AreNotEqual(oldSignature, newSignature);

                var where = $"{(data ? "data" : "model")} file at byte {offset}";
                // A write failure is reported as a user-facing OnnxFormatException (exit 2) wrapping the IOException.
                var failed = Assert.ThrowsExactly<OnnxFormatException>(() => model.Save(output, NewOutput(p => IsDataTemp(p) == data ? offset : null)), where);
                Assert.IsInstanceOfType<IOException>(failed.InnerException, where);
                StringAssert.Contains(failed.InnerException!.Message, $"at byte {offset} of", where);

                Assert.AreEqual(oldListing, Listing(outDir), $"{where}: the output folder changed");
                Assert.AreEqual(oldSignature, Signature(output), $"{where}: the old model no longer loads with its data");
            }

            // The same replacement, uninterrupted: the new model, and only its data beside it.
            var last = Path.Combine(dir, "out0", "model.onnx");
            model.Save(last, NewOutput());
            Assert.AreEqual(newSignature, Signature(last));
            Assert.HasCount(2, Directory.GetFiles(Path.GetDirectoryName(last)!), "the old data file was not removed");
            Assert.AreEqual(inputListing, Listing(Path.GetDirectoryName(input)!), "the input changed");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
