using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Runtime;

/// <summary>Converted fixtures, made once per test run and shared (conversion costs ~0.1 s each).</summary>
internal static class RuntimeFixtures
{
    private static readonly Dictionary<string, string> Converted = new();
    private static readonly Lock Gate = new();

    public static string Convert(string fixture, string layout = "native", int? window = null, string backend = "ops")
    {
        var key = $"{fixture}|{layout}|{window}|{backend}";
        lock (Gate)
        {
            if (Converted.TryGetValue(key, out var path)) return path;
            path = Path.Combine(TestPaths.TempDir(), "model.onnx");
            Converter.Convert(TestPaths.Fixture(fixture), path, new ConversionOptions { Layout = layout, Backend = backend, Window = window });
            Converted[key] = path;
            return path;
        }
    }

    public static MixAttentionModel Open(string path) => MixAttentionModel.Open(path, new ModelOptions { IntraOpNumThreads = 1 });

    public static long[] RandomTokens(int seed, int count, int vocab = 200)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (long)rng.Next(0, vocab)).ToArray();
    }

}
