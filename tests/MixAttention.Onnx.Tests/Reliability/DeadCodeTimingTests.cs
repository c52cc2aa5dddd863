using System.Diagnostics;
using Google.Protobuf;
using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Onnx.Proto;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Reliability;

/// <summary>Graph edits are linear in the graph's size: a few MB of dead nodes cannot stall a conversion (issue 22 case 8).</summary>
[TestClass]
public sealed class DeadCodeTimingTests
{
    /// <summary>
    /// 200,000 dead Identity nodes reading input_ids (a 6.6 MB file): before, dead-code removal called
    /// RepeatedField.Remove and unlinked input_ids' consumer list once per node (326 s); now one sweep.
    /// </summary>
    [TestMethod]
    [TestCategory("Slow")]
    public void TwoHundredThousandDeadNodesConvertInUnderTenSeconds()
    {
        var dir = TestPaths.TempDir();
        var model = OnnxModel.Load(TestPaths.Fixture("llama-gqa")).Proto.Clone();
        var ids = model.Graph.Input[0].Name;
        for (int i = 0; i < 200_000; i++)
            model.Graph.Node.Add(new NodeProto { OpType = "Identity", Name = $"dead{i}", Input = { ids }, Output = { $"dead_out{i}" } });
        var input = Path.Combine(dir, "in.onnx");
        File.WriteAllBytes(input, model.ToByteArray());
        var clock = Stopwatch.StartNew();
        var report = Converter.Convert(input, Path.Combine(dir, "out.onnx"), new ConversionOptions { Layout = "native" });
        clock.Stop();
        Console.WriteLine($"converted {new FileInfo(input).Length:N0} bytes with 200,000 dead nodes in {clock.Elapsed.TotalSeconds:0.00} s");
        Assert.IsGreaterThanOrEqualTo(200_000, report.Removed.Nodes);
        Assert.IsLessThan(10.0, clock.Elapsed.TotalSeconds, $"took {clock.Elapsed.TotalSeconds:0.0} s");
        var output = OnnxModel.Load(Path.Combine(dir, "out.onnx")).Proto;
        Assert.IsFalse(output.Graph.Node.Any(n => n.Name.StartsWith("dead", StringComparison.Ordinal)));
        Directory.Delete(dir, true);
    }
}
