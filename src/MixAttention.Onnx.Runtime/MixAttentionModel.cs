using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MixAttention.Onnx.Lowering;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// An opened decoder model: a converted MixAttention model (its cache plan read from the metadata) or an
/// unconverted export (plain past/present). Owns the <see cref="InferenceSession"/>; creates decoding sessions
/// (<see cref="CreateSession"/>) that own their caches.
/// </summary>
public sealed class MixAttentionModel : IDisposable
{
    private readonly SessionOptions? _ownedOptions;
    private OrtAllocator? _deviceAllocator;

    private MixAttentionModel(string path, InferenceSession session, SessionOptions? ownedOptions, CachePlan? plan, ModelOptions options)
    {
        Path = path;
        Session = session;
        _ownedOptions = ownedOptions;
        Plan = plan;
        Options = options;
        CacheMemoryInfo = options.Device == ExecutionDevice.Cuda
            ? new OrtMemoryInfo(OrtMemoryInfo.allocatorCUDA, OrtAllocatorType.DeviceAllocator, options.DeviceId, OrtMemType.Default)
            : OrtMemoryInfo.DefaultInstance;
        InputIds = plan?.InputIds ?? "input_ids";
        Logits = plan?.Logits ?? "logits";
        if (!session.InputMetadata.TryGetValue(InputIds, out var ids))
            throw new MixAttentionException($"{path}: the model has no input '{InputIds}'.");
        InputIdsType = ids.ElementDataType;
        if (!session.OutputMetadata.TryGetValue(Logits, out var logits))
            throw new MixAttentionException($"{path}: the model has no output '{Logits}'.");
        LogitsType = logits.ElementDataType;
        VocabSize = logits.Dimensions[^1];
    }

    /// <summary>The model file.</summary>
    public string Path { get; }
    /// <summary>The ORT session.</summary>
    public InferenceSession Session { get; }
    /// <summary>The cache plan; null for an unconverted model.</summary>
    public CachePlan? Plan { get; }
    /// <summary>True for a converted model whose caches are preallocated and updated in place.</summary>
    public bool IsInPlace => Plan is not null && Plan.Caches.All(c => c.Capacity != CapacityRule.Growing);
    /// <summary>Options it was opened with.</summary>
    public ModelOptions Options { get; }
    /// <summary>Where caches live.</summary>
    public OrtMemoryInfo CacheMemoryInfo { get; }
    /// <summary>Token ids input name.</summary>
    public string InputIds { get; }
    /// <summary>int32 or int64.</summary>
    public TensorElementType InputIdsType { get; }
    /// <summary>Logits output name.</summary>
    public string Logits { get; }
    /// <summary>float, float16 or bfloat16.</summary>
    public TensorElementType LogitsType { get; }
    /// <summary>Vocabulary size (last dimension of the logits; -1 when symbolic).</summary>
    public int VocabSize { get; }

    /// <summary>
    /// Opens <paramref name="path"/>. Registers the com.mixattention op library for converted models, and ORT
    /// Extensions when the graph uses their domain; appends the CUDA execution provider when asked and the caller
    /// gave no session options.
    /// </summary>
    public static MixAttentionModel Open(string path, ModelOptions? options = null)
    {
        options ??= new ModelOptions();
        if (!File.Exists(path)) throw new MixAttentionException($"model not found: {path}");
        var owned = options.SessionOptions is null ? new SessionOptions() : null;
        var so = options.SessionOptions ?? owned!;
        InferenceSession? session = null;
        try
        {
            if (owned is not null)
            {
                if (options.IntraOpNumThreads > 0) owned.IntraOpNumThreads = options.IntraOpNumThreads;
                if (options.Device == ExecutionDevice.Cuda) owned.AppendExecutionProvider_CUDA(options.DeviceId);
            }
            // The op library is harmless for a model that does not use it; register it whenever it is present.
            var opLib = options.OpLibraryPath ?? (Native.NativeLibraryPath.Exists ? Native.NativeLibraryPath.Path : null);
            if (opLib is not null) so.RegisterCustomOpLibrary(opLib);
            if (options.RequireInPlace) so.AddSessionConfigEntry("mixattention.require_inplace", "1");
            try
            {
                session = new InferenceSession(path, so);
            }
            catch (OnnxRuntimeException e) when (e.Message.Contains("ai.onnx.contrib", StringComparison.Ordinal) && OrtExtensionsLibrary.Find() is { } ext)
            {
                so.RegisterCustomOpLibrary(ext);
                session = new InferenceSession(path, so);
            }
            catch (OnnxRuntimeException e) when (opLib is null && e.Message.Contains(Native.NativeLibraryPath.Domain, StringComparison.Ordinal))
            {
                throw new MixAttentionException($"{path} uses the {Native.NativeLibraryPath.Domain} ops but {Native.NativeLibraryPath.FileName} was not found.", e);
            }
            CachePlan? plan = session.ModelMetadata.CustomMetadataMap.TryGetValue(CachePlan.MetadataKey, out var json) ? CachePlan.FromJson(json) : null;
            return new MixAttentionModel(path, session, owned, plan, options);
        }
        catch
        {
            session?.Dispose();
            owned?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A decoding session with its own caches: <see cref="MixAttentionSession"/> (in place, continuous batching) for
    /// converted models, <see cref="PlainDecoderSession"/> (growing past/present per sequence) otherwise.
    /// </summary>
    public IDecoderSession CreateSession(SessionConfig? config = null)
    {
        config ??= new SessionConfig();
        config.Validate();
        return IsInPlace ? new MixAttentionSession(this, config) : new PlainDecoderSession(this, config);
    }

    internal OrtAllocator? DeviceAllocator()
    {
        if (Options.Device == ExecutionDevice.Cpu) return null;
        return _deviceAllocator ??= new OrtAllocator(Session, CacheMemoryInfo);
    }

    /// <summary>Disposes the session (and the options it created).</summary>
    public void Dispose()
    {
        _deviceAllocator?.Dispose();
        Session.Dispose();
        _ownedOptions?.Dispose();
        if (!ReferenceEquals(CacheMemoryInfo, OrtMemoryInfo.DefaultInstance)) CacheMemoryInfo.Dispose();
    }
}
