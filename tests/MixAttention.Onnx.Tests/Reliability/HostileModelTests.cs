using Google.Protobuf;
using MixAttention.Onnx.Graph;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Onnx.Proto;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Reliability;

/// <summary>Malformed and hostile models: each gives one clear error naming what and where.</summary>
[TestClass]
public sealed class HostileModelTests
{
    private static ModelProto Fixture() => OnnxModel.Load(TestPaths.Fixture("llama-gqa")).Proto.Clone();

    private static OnnxFormatException LoadFails(ModelProto model)
    {
        var dir = TestPaths.TempDir();
        var path = Path.Combine(dir, "hostile.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        return Assert.ThrowsExactly<OnnxFormatException>(() => OnnxModel.Load(path));
    }

    [TestMethod]
    public void NegativeDimensionNamesTheTensor()
    {
        var m = Fixture();
        var t = m.Graph.Initializer.First(i => i.Dims.Count == 2);
        t.Dims[0] = -5;
        var e = LoadFails(m);
        StringAssert.Contains(e.Message, t.Name);
        StringAssert.Contains(e.Message, "-5");
    }

    [TestMethod]
    public void AbsurdDimensionIsRejected()
    {
        var m = Fixture();
        var t = m.Graph.Initializer.First(i => i.Dims.Count == 2);
        t.Dims[0] = 1L << 40;
        t.Dims[1] = 1L << 40;
        StringAssert.Contains(LoadFails(m).Message, t.Name);
    }

    [TestMethod]
    public void DataThatContradictsTheShapeIsRejected()
    {
        var m = Fixture();
        var t = m.Graph.Initializer.First(i => i.RawData.Length > 100);
        t.RawData = ByteString.CopyFrom(t.RawData.Span[..100]);
        var e = LoadFails(m);
        StringAssert.Contains(e.Message, t.Name);
        StringAssert.Contains(e.Message, "holds 100");
    }

    [TestMethod]
    public void NegativeDeclaredShapeIsRejected()
    {
        var m = Fixture();
        m.Graph.Input[0].Type.TensorType.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = -3 });
        StringAssert.Contains(LoadFails(m).Message, m.Graph.Input[0].Name);
    }

    [TestMethod]
    public void DuplicateValueNamesAreRejected()
    {
        var m = Fixture();
        var first = m.Graph.Node.First(n => n.OpType == "MatMul");
        var second = m.Graph.Node.Last(n => n.OpType == "MatMul");
        second.Output[0] = first.Output[0];
        var e = Assert.ThrowsExactly<OnnxFormatException>(() => new ModelGraph(OnnxModel.FromProto(m)));
        StringAssert.Contains(e.Message, first.Output[0]);
        StringAssert.Contains(e.Message, "produced twice");
    }

    [TestMethod]
    public void CyclicGraphIsRejected()
    {
        var m = Fixture();
        var first = m.Graph.Node.First(n => n.OpType == "MatMul");
        var last = m.Graph.Node.Last(n => n.OpType == "MatMul");
        first.Input[0] = last.Output[0];
        var e = Assert.ThrowsExactly<OnnxFormatException>(() => new ModelGraph(OnnxModel.FromProto(m)).TopologicalOrder());
        StringAssert.Contains(e.Message, "cycle");
    }

    [TestMethod]
    [DataRow("/etc/passwd")]
    [DataRow("../../etc/passwd")]
    public void ExternalDataOutsideTheFolderIsRefusedUnlessAllowed(string location)
    {
        var dir = TestPaths.TempDir();
        var path = Path.Combine(dir, "m.onnx");
        OnnxModel.Load(TestPaths.Fixture("llama-gqa")).Save(path, new OnnxSaveOptions { ExternalizeAtLeastBytes = 1024 });
        var m = OnnxModel.Load(path).Proto;
        var t = ExternalDataRef.AllTensors(m).First(x => ExternalDataRef.Of(x) is not null);
        (ExternalDataRef.Of(t)! with { Location = location, Length = 16, Offset = 0 }).ApplyTo(t);
        File.WriteAllBytes(path, m.ToByteArray());
        var e = Assert.ThrowsExactly<OnnxFormatException>(() => OnnxModel.Load(path));
        StringAssert.Contains(e.Message, "outside");
        // Allowed explicitly, the path is read as given (it then fails on the length check, not on policy).
        var allowed = Assert.ThrowsExactly<OnnxFormatException>(() => OnnxModel.Load(path, new OnnxLoadOptions { AllowExternalDataOutsideModelFolder = true }));
        Assert.DoesNotContain("outside", allowed.Message);
    }

    [TestMethod]
    public void ExternalDataPastTheEndOfTheFileIsRefused()
    {
        var dir = TestPaths.TempDir();
        var path = Path.Combine(dir, "m.onnx");
        OnnxModel.Load(TestPaths.Fixture("llama-gqa")).Save(path, new OnnxSaveOptions { ExternalizeAtLeastBytes = 1024 });
        var m = OnnxModel.Load(path).Proto;
        var t = ExternalDataRef.AllTensors(m).First(x => ExternalDataRef.Of(x) is not null);
        (ExternalDataRef.Of(t)! with { Offset = new FileInfo(path + ".data").Length }).ApplyTo(t);
        File.WriteAllBytes(path, m.ToByteArray());
        var e = Assert.ThrowsExactly<OnnxFormatException>(() => OnnxModel.Load(path));
        StringAssert.Contains(e.Message, t.Name);
        StringAssert.Contains(e.Message, "past the end");
    }
}
