using Google.Protobuf;
using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Graph;
using MixAttention.Onnx.Layouts;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Runtime.Tuning;

/// <summary>
/// Builds converted models of one source in memory: the source is read once (never its external weights), each
/// candidate layout is lowered on a copy of its graph and opened in ONNX Runtime from the serialized bytes, which
/// resolve external weights in the source's folder. No file is written per candidate.
/// </summary>
internal sealed class CandidateModels
{
    private readonly OnnxModel _source;
    private readonly ModelConfig _config;
    private readonly ModelOptions _options;
    private readonly string _backend;

    public CandidateModels(string sourcePath, ModelOptions? options = null, string backend = BackendName.Ops)
    {
        _source = OnnxModel.Load(sourcePath);
        _config = ModelConfig.ForModel(_source.SourcePath);
        _options = (options ?? new ModelOptions()) with { CheckModelFiles = false };
        _backend = backend;
        var detection = AttentionDetector.Detect(new ModelGraph(OnnxModel.FromProto(_source.Proto.Clone(), _source.BaseDirectory)), _config);
        if (detection.Sites.Count == 0)
            throw new MixAttentionException($"{sourcePath}: no attention layers found in this model.");
        if (!detection.IsComplete)
            throw new MixAttentionException(Converter.RefusalMessage(detection));
        Context = LayoutContext.FromSites(detection.Sites);
        Native = LayoutParser.Parse("native", Context);
    }

    /// <summary>Path of the source model.</summary>
    public string SourcePath => _source.SourcePath!;

    /// <summary>Per-layer facts of the source (heads, head size, own windows, sharing).</summary>
    public LayoutContext Context { get; }

    /// <summary>The model's own layout (exact).</summary>
    public MixAttentionLayout Native { get; }

    /// <summary>Converts the source to <paramref name="layout"/> in memory and opens the result.</summary>
    public MixAttentionModel Open(MixAttentionLayout layout)
    {
        var copy = OnnxModel.FromProto(_source.Proto.Clone(), _source.BaseDirectory);
        Converter.ConvertInMemory(copy, _config, new ConversionOptions { Layout = layout.ToCompactString(withWindows: true), Backend = _backend });
        var bytes = copy.Proto.ToByteArray();
        return MixAttentionModel.OpenBytes(bytes, $"{Path.GetFileName(SourcePath)} as {layout.ToCompactString(withWindows: true)} (in memory)", _source.BaseDirectory, _options);
    }
}
