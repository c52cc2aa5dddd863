namespace MixAttention.Onnx.Conversion;

/// <summary>
/// What a calibration run saw: for every layer of the source model that keeps a cache, the largest |K| and |V| per KV head
/// and channel (index <c>h·D + d</c>) over the calibration tokens. Made by the runtime (<c>KvCalibrator</c>, which runs the
/// source model); the converter turns it into scales (<see cref="ConversionOptions.Calibration"/>).
/// </summary>
public sealed class KvCalibration
{
    private readonly Dictionary<int, (float[] Key, float[] Value)> _absMax;

    internal KvCalibration(string source, int tokens, Dictionary<int, (float[] Key, float[] Value)> absMax)
    {
        Source = source;
        Tokens = tokens;
        _absMax = absMax;
    }

    /// <summary>What the tokens were (a file, a token list, seeded random tokens).</summary>
    public string Source { get; }
    /// <summary>Tokens the source model read.</summary>
    public int Tokens { get; }

    /// <summary>Largest |K| and |V| per head and channel of <paramref name="layer"/>'s cache, or null when it kept none.</summary>
    internal (float[] Key, float[] Value)? AbsMax(int layer) => _absMax.TryGetValue(layer, out var v) ? v : null;

    /// <summary>The layers seen.</summary>
    internal IReadOnlyCollection<int> Layers => _absMax.Keys;
}
