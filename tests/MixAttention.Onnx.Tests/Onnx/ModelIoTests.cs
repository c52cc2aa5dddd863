using Google.Protobuf;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Onnx.Proto;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Onnx;

[TestClass]
public sealed class ModelIoTests
{
    public static IEnumerable<object[]> AllFixtures() =>
        TestPaths.FixtureDirectories().Select(d => new object[] { Path.GetFileName(d) });

    [TestMethod]
    [DynamicData(nameof(AllFixtures))]
    public void LoadSaveRoundTripGivesIdenticalBytesAndOutputs(string fixture)
    {
        var source = TestPaths.Fixture(fixture);
        var model = OnnxModel.Load(source);
        var dir = TestPaths.TempDir();
        var copy = Path.Combine(dir, "model.onnx");
        model.Save(copy);

        // Same message (unknown fields and metadata included) ...
        var reloaded = OnnxModel.Load(copy);
        Assert.AreEqual(model.Proto, reloaded.Proto, "the saved model differs from the loaded one");
        // ... and ORT computes the same outputs. fp16 GQA models may not run on CPU: those compare protos only.
        if (fixture.Contains("fp16")) return;
        // ORT's GQA takes a multi-token step with past context only for batch 1.
        int batch = fixture.Contains("gqa") ? 1 : 2;
        var expected = OrtRunner.RunWithSyntheticInputs(source, batch: batch);
        var actual = OrtRunner.RunWithSyntheticInputs(copy, batch: batch);
        CollectionAssert.AreEquivalent(expected.Keys.ToList(), actual.Keys.ToList());
        foreach (var (name, values) in expected)
            CollectionAssert.AreEqual(values, actual[name], $"output '{name}' changed after load/save");
    }

    [TestMethod]
    public void ExternalDataIsWrittenStreamedAndRunsIdentically()
    {
        var source = TestPaths.Fixture("gpt2-ortattention");
        var dir = TestPaths.TempDir();
        var external = Path.Combine(dir, "external.onnx");
        OnnxModel.Load(source).Save(external, new OnnxSaveOptions { ExternalizeAtLeastBytes = 1024 });

        Assert.IsTrue(File.Exists(external + ".data"), "no external data file was written");
        var loaded = OnnxModel.Load(external);
        var tensors = loaded.ExternalTensors().ToList();
        Assert.IsGreaterThan(5, tensors.Count, "large initializers should be external");
        Assert.IsTrue(tensors.All(t => t.Tensor.RawData.IsEmpty), "external tensors must not carry inline bytes");
        Assert.IsTrue(new FileInfo(external).Length < new FileInfo(source).Length / 4, "model file should be small once weights are external");

        // Save again to another folder: the data is streamed into a new file next to the new model.
        var dir2 = TestPaths.TempDir();
        var moved = Path.Combine(dir2, "moved.onnx");
        loaded.Save(moved);
        Assert.IsTrue(File.Exists(moved + ".data"));
        Assert.IsTrue(OnnxModel.Load(moved).ExternalTensors().All(t => t.Ref.Location == "moved.onnx.data"));

        var expected = OrtRunner.RunWithSyntheticInputs(source);
        foreach (var path in new[] { external, moved })
        {
            var actual = OrtRunner.RunWithSyntheticInputs(path);
            foreach (var (name, values) in expected)
                CollectionAssert.AreEqual(values, actual[name], $"output '{name}' of {Path.GetFileName(path)} differs");
        }
    }

    [TestMethod]
    public void UnknownFieldsAndMetadataSurvive()
    {
        var model = OnnxModel.Load(TestPaths.Fixture("gpt2-ortattention"));
        model.Proto.MetadataProps.Add(new StringStringEntryProto { Key = "k", Value = "v" });
        // An unknown field (number 999, varint 42) appended to the serialized model.
        var bytes = model.Proto.ToByteArray().Concat(new byte[] { 0xB8, 0x3E, 42 }).ToArray();
        var parsed = OnnxModel.Parse(bytes);
        var dir = TestPaths.TempDir();
        parsed.Save(Path.Combine(dir, "m.onnx"));
        var back = File.ReadAllBytes(Path.Combine(dir, "m.onnx"));
        CollectionAssert.AreEqual(bytes, back, "bytes changed: unknown field or metadata lost");
    }

    [TestMethod]
    public void TruncatedFileIsAClearError()
    {
        var dir = TestPaths.TempDir();
        var path = Path.Combine(dir, "t.onnx");
        File.WriteAllBytes(path, File.ReadAllBytes(TestPaths.Fixture("gpt2-ortattention")).Take(5000).ToArray());
        var e = Assert.ThrowsExactly<OnnxFormatException>(() => OnnxModel.Load(path));
        StringAssert.Contains(e.Message, "truncated");
        StringAssert.Contains(e.Message, "t.onnx");
    }

    [TestMethod]
    public void NonOnnxFileIsAClearError()
    {
        var dir = TestPaths.TempDir();
        var path = Path.Combine(dir, "notes.onnx");
        File.WriteAllText(path, "this is a text file, not a model\n");
        var e = Assert.ThrowsExactly<OnnxFormatException>(() => OnnxModel.Load(path));
        StringAssert.Contains(e.Message, "not");
    }

    [TestMethod]
    public void MissingExternalDataFileNamesTensorAndFile()
    {
        var dir = TestPaths.TempDir();
        var path = Path.Combine(dir, "ext.onnx");
        OnnxModel.Load(TestPaths.Fixture("gpt2-ortattention")).Save(path, new OnnxSaveOptions { ExternalizeAtLeastBytes = 1024 });
        File.Delete(path + ".data");
        var e = Assert.ThrowsExactly<OnnxFormatException>(() => OnnxModel.Load(path));
        StringAssert.Contains(e.Message, "ext.onnx.data");
        StringAssert.Contains(e.Message, "missing");
    }

    [TestMethod]
    public void ExternalDataOutsideTheModelFolderIsRefused()
    {
        var dir = TestPaths.TempDir();
        var path = Path.Combine(dir, "ext.onnx");
        OnnxModel.Load(TestPaths.Fixture("gpt2-ortattention")).Save(path, new OnnxSaveOptions { ExternalizeAtLeastBytes = 1024 });
        var evil = OnnxModel.Load(path);
        var (tensor, r) = evil.ExternalTensors().First();
        (r with { Location = "../../etc/passwd" }).ApplyTo(tensor);
        File.WriteAllBytes(Path.Combine(dir, "evil.onnx"), evil.Proto.ToByteArray());
        var e = Assert.ThrowsExactly<OnnxFormatException>(() => OnnxModel.Load(Path.Combine(dir, "evil.onnx")));
        StringAssert.Contains(e.Message, "outside");
        StringAssert.Contains(e.Message, tensor.Name);
        // Saving such a model (loaded without validation) must not read the file either.
        var unchecked_ = OnnxModel.Load(Path.Combine(dir, "evil.onnx"), new OnnxLoadOptions { ValidateExternalData = false });
        Assert.ThrowsExactly<OnnxFormatException>(() => unchecked_.Save(Path.Combine(dir, "copy.onnx")));
        Assert.IsFalse(File.Exists(Path.Combine(dir, "copy.onnx")), "a failed save left an output behind");
    }

    [TestMethod]
    public void SaveNeverOverwritesInputOrExistingOutputWithoutForce()
    {
        var dir = TestPaths.TempDir();
        var path = Path.Combine(dir, "m.onnx");
        var model = OnnxModel.Load(TestPaths.Fixture("gpt2-ortattention"));
        model.Save(path);
        var loaded = OnnxModel.Load(path);
        Assert.ThrowsExactly<OnnxFormatException>(() => loaded.Save(path, new OnnxSaveOptions { Overwrite = true }));
        Assert.ThrowsExactly<OnnxFormatException>(() => model.Save(path));
        model.Save(path, new OnnxSaveOptions { Overwrite = true });
        Assert.AreEqual(0, Directory.GetFiles(dir, "*.tmp").Length + Directory.GetFiles(dir, ".*").Length, "temporary files left behind");
    }
}
