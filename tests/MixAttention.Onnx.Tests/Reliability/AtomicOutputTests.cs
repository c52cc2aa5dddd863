using System.Diagnostics;
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
    /// content of the data it references (sampled: 64 slices of 64 KiB plus the length). Null when the model
    /// does not load with its data.
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
        var buffer = new byte[64 << 10];
        foreach (var f in files)
        {
            using var s = File.OpenRead(f);
            sha.AppendData(BitConverter.GetBytes(s.Length));
            for (int i = 0; i < 64; i++)
            {
                s.Position = s.Length / 64 * i;
                sha.AppendData(buffer, 0, s.Read(buffer, 0, buffer.Length));
            }
        }
        return Convert.ToHexString(sha.GetHashAndReset());
    }

    private static Process StartConvert(string input, string output) => Process.Start(new ProcessStartInfo("dotnet")
    {
        RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        ArgumentList = { Path.Combine(AppContext.BaseDirectory, "mixattn.dll"), "convert", input, "-o", output, "--layout", "native", "--force", "--copy-weights", "--json" },
    })!;

    /// <summary>
    /// Kill `mixattn convert` at several points while it writes ~3 GB of weights over an existing output: every
    /// time the output folder holds either the complete old model with its data or the complete new one —
    /// never a mix, never a half-written file under the output's name — and the input is untouched.
    /// </summary>
    [TestMethod]
    public void KillingAConversionAtAnyPointLeavesOldOrNewOutputComplete()
    {
        var dir = TestPaths.TempDir();
        try
        {
            var (input, _) = SyntheticModel.Write(Path.Combine(dir, "in"), layers: 32, hidden: 2048, heads: 16, kvHeads: 4, intermediate: 5632);
            var inputSignature = Signature(input);

            // The new output, converted without interruption, and how long that takes.
            var reference = Path.Combine(dir, "reference", "model.onnx");
            var clock = Stopwatch.StartNew();
            using (var p = StartConvert(input, reference)) { p.WaitForExit(); Assert.AreEqual(0, p.ExitCode, p.StandardError.ReadToEnd()); }
            var full = clock.Elapsed;
            var newSignature = Signature(reference);
            Directory.Delete(Path.GetDirectoryName(reference)!, true);

            foreach (var fraction in new[] { 0.2, 0.5, 0.8, 0.95 })
            {
                var outDir = Path.Combine(dir, $"out{fraction}");
                var output = Path.Combine(outDir, "model.onnx");
                OnnxModel.Load(TestPaths.Fixture("llama-gqa")).Save(output, new OnnxSaveOptions { ExternalizeAtLeastBytes = 1024 });
                var oldSignature = Signature(output);

                using var p = StartConvert(input, output);
                Thread.Sleep(full * fraction);
                bool finished = p.HasExited;
                if (!finished) p.Kill(entireProcessTree: true);
                p.WaitForExit();

                var now = Signature(output);
                Assert.IsNotNull(now, $"killed at {fraction:P0}: the output does not load with its data");
                Assert.IsTrue(now == oldSignature || now == newSignature, $"killed at {fraction:P0} (finished: {finished}): the output is neither the old nor the new model");
                Console.WriteLine($"killed at {fraction:P0} of {full.TotalSeconds:0.0} s: output is the {(now == oldSignature ? "old" : "new")} model");
            }
            Assert.AreEqual(inputSignature, Signature(input), "the input changed");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
