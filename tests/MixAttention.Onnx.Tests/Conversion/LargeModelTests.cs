using System.Diagnostics;
using MixAttention.Onnx.Lowering;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Tests.Cli;
using MixAttention.Onnx.Tests.Support;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Tests.Conversion;

[TestClass]
public sealed class LargeModelTests
{
    /// <summary>
    /// A model whose weights exceed protobuf's 2 GiB limit (external data, sparse file) converts through the CLI
    /// without reading its weights: bounded time and peak RSS. Set MIXATTN_LARGE_MODEL=7b for the 13 GB
    /// Llama-2-7B shape (32 layers, hidden 4096, 32 KV heads) of docs/reliability.md.
    /// </summary>
    [TestMethod]
    public void ConvertsAModelOverTwoGigabytesWithoutReadingWeights()
    {
        bool sevenB = Environment.GetEnvironmentVariable("MIXATTN_LARGE_MODEL") == "7b";
        var dir = TestPaths.TempDir();
        try
        {
            var (path, bytes) = sevenB
                ? SyntheticModel.Write(Path.Combine(dir, "in"), layers: 32, hidden: 4096, heads: 32, kvHeads: 32, intermediate: 11008)
                : SyntheticModel.Write(Path.Combine(dir, "in"), layers: 32, hidden: 2048, heads: 16, kvHeads: 4, intermediate: 5632);
            Assert.IsGreaterThan(2L << 30, bytes, "the generated model must exceed 2 GiB");
            var output = Path.Combine(dir, "out", "model.onnx");

            var dll = Path.Combine(AppContext.BaseDirectory, "mixattn.dll");
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in new[] { dll, "convert", path, "-o", output, "--layout", "cai", "--window", "1024", "--json", "--check", "structure" }) psi.ArgumentList.Add(a);
            var clock = Stopwatch.StartNew();
            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            long peak = 0;
            while (!p.WaitForExit(20))
            {
                try { p.Refresh(); peak = Math.Max(peak, p.PeakWorkingSet64); } catch (InvalidOperationException) { }
            }
            clock.Stop();
            Assert.AreEqual(0, p.ExitCode, stderr.Result);
            Console.WriteLine($"converted {bytes / (1 << 20)} MiB of weights in {clock.Elapsed.TotalSeconds:0.00} s, peak RSS {peak / (1 << 20)} MiB");
            Assert.IsLessThan(30.0, clock.Elapsed.TotalSeconds, "conversion took too long: weights are being read");
            Assert.IsLessThan(1L << 30, peak, "peak RSS over 1 GiB: weights are being read into memory");

            var converted = OnnxModel.Load(output);
            var plan = CachePlan.FromModel(converted.Proto)!;
            Assert.IsLessThan(32, plan.Caches.Count);
            Assert.IsTrue(converted.ExternalTensors().All(t => t.Ref.Location == "model.onnx.data"));
            Assert.AreEqual(bytes, new FileInfo(output + ".data").Length);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
