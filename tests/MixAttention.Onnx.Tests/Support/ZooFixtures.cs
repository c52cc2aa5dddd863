using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Runtime.Native;
using System.Text.Json.Nodes;

namespace MixAttention.Onnx.Tests.Support;

/// <summary>
/// The model zoo (tools/fixtures/export_zoo.py): one tiny transformers model per architecture, exported with every
/// exporter torch has for it, with torch's teacher-forced logits. The repository keeps it as one Brotli-compressed tar
/// (graphs/zoo.tar.br: the exports of one architecture share their weights, which only a large-window compressor
/// sees); it is unpacked once per test process into the test output folder.
/// </summary>
public static class ZooFixtures
{
    private static readonly Lazy<string> Root = new(Unpack);

    /// <summary>The folder holding the unpacked zoo (one sub-folder per export, plus reference/ and summary.json).</summary>
    public static string Directory => Root.Value;

    /// <summary>The folder of one export, e.g. <c>gemma2-torchscript-p5</c>.</summary>
    public static string Dir(string name) => Path.Combine(Directory, name);

    /// <summary>The model file of one export.</summary>
    public static string Model(string name) => Path.Combine(Dir(name), "model.onnx");

    /// <summary>Every export in the zoo, by folder name.</summary>
    public static IReadOnlyList<string> Names() =>
        System.IO.Directory.GetDirectories(Directory).Where(d => File.Exists(Path.Combine(d, "model.onnx")))
            .Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal).ToArray();

    /// <summary><see cref="Names"/> as test data rows.</summary>
    public static IEnumerable<object[]> Rows() => Names().Select(n => new object[] { n });

    /// <summary>The provenance record the export script wrote beside the model.</summary>
    public static JsonNode Provenance(string name) => JsonNode.Parse(File.ReadAllText(Path.Combine(Dir(name), "provenance.json")))!;

    /// <summary>The torch reference of an export (input ids [B, T] and logits [B, T, V]).</summary>
    public static TorchReference Reference(string name) => TorchReference.ForDirectory(Dir(name));

    /// <summary>Converts <paramref name="model"/> into a fresh folder and returns the converted model's path.</summary>
    public static string Convert(string model, string layout, string backend = "ops", int? window = null, Func<ConversionOptions, ConversionOptions>? with = null)
    {
        var output = Path.Combine(TestPaths.TempDir(), "model.onnx");
        var options = new ConversionOptions { Layout = layout, Backend = backend, Window = window };
        Converter.Convert(model, output, with is null ? options : with(options));
        return output;
    }

    /// <summary>Logits [B, T, V] of <paramref name="model"/> teacher-forced over <paramref name="reference"/>'s ids (prefill 5, then one token at a time).</summary>
    public static float[] Decode(string model, TorchReference reference)
    {
        using var runner = new DecoderRunner(model, NativeLibraryPath.GetRequired());
        return runner.Run(reference.InputIds, reference.Batch, reference.Length, prefill: 5);
    }

    private static string Unpack() => Path.Combine(PackedArchive.Unpack(Path.Combine(TestPaths.Graphs, "zoo.tar.br")), "zoo");
}
