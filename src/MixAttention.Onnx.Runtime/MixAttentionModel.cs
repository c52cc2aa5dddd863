using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MixAttention.Onnx.Plan;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// An opened decoder model: a converted MixAttention model (its cache plan read from the metadata) or an
/// unconverted export (plain past/present). Owns the <see cref="InferenceSession"/>; creates decoding sessions
/// (<see cref="CreateSession"/>) that own their caches.
/// <para>
/// Ownership: every decoding session holds a reference to its model. <see cref="Dispose"/> with sessions still open
/// only marks the model disposed (no new sessions: <see cref="ObjectDisposedException"/>); the ORT session is released
/// when the last of them is disposed, so a live session never runs on a released model.
/// Thread safety: opening sessions and running different sessions of one model on different threads is allowed.
/// </para>
/// </summary>
public sealed class MixAttentionModel : IDisposable
{
    private readonly SessionOptions? _ownedOptions;
    private readonly InferenceSession _session;
    private readonly Lock _allocatorGate = new();
    private OrtAllocator? _deviceAllocator;
    private int _references = 1; // the model's own, plus one per live decoding session
    private int _disposed;

    private MixAttentionModel(string path, InferenceSession session, SessionOptions? ownedOptions, CachePlan? plan, ModelOptions options, bool ownsSession = true)
    {
        _ownsSession = ownsSession;
        Path = path;
        _session = session;
        _ownedOptions = ownedOptions;
        Plan = plan;
        Options = options;
        InputIds = plan?.InputIds ?? "input_ids";
        Logits = plan?.Logits ?? "logits";
        if (!session.InputMetadata.TryGetValue(InputIds, out var ids))
            throw new MixAttentionException($"{path}: the model has no input '{InputIds}' (token ids); its inputs are {List(session.InputMetadata.Keys)}.");
        InputIdsType = ids.ElementDataType;
        if (InputIdsType is not (TensorElementType.Int32 or TensorElementType.Int64))
            throw new MixAttentionException($"{path}: input '{InputIds}' (token ids) is {InputIdsType}; the runtime feeds int32 or int64.");
        if (!session.OutputMetadata.TryGetValue(Logits, out var logits))
            throw new MixAttentionException($"{path}: the model has no output '{Logits}' (logits); its outputs are {List(session.OutputMetadata.Keys)}.");
        LogitsType = logits.ElementDataType;
        if (LogitsType is not (TensorElementType.Float or TensorElementType.Float16 or TensorElementType.BFloat16))
            throw new MixAttentionException($"{path}: output '{Logits}' (logits) is {LogitsType}; the runtime reads float, float16 or bfloat16.");
        VocabSize = logits.Dimensions.Length == 0 ? -1 : logits.Dimensions[^1];
        if (plan is not null) CheckPlan(path, plan, session);
        CacheMemoryInfo = options.Device == ExecutionDevice.Cuda
            ? new OrtMemoryInfo(OrtMemoryInfo.allocatorCUDA, OrtAllocatorType.DeviceAllocator, options.DeviceId, OrtMemType.Default)
            : OrtMemoryInfo.DefaultInstance;
    }

    private readonly bool _ownsSession;

    /// <summary>
    /// Tests and fuzzing: the model as <see cref="Open"/> would make it from an already open ORT session and a cache
    /// plan document (parsed and checked against the session's graph exactly as there). The session stays the caller's.
    /// </summary>
    internal static MixAttentionModel FromSession(string path, InferenceSession session, string? planJson, ModelOptions? options = null) =>
        new(path, session, null, planJson is null ? null : CachePlan.FromJson(planJson), options ?? new ModelOptions(), ownsSession: false);

    private static string List(IEnumerable<string> names)
    {
        var all = names.ToList();
        return all.Count <= 12 ? string.Join(", ", all) : string.Join(", ", all.Take(12)) + $", … ({all.Count} in all)";
    }

    /// <summary>
    /// The cache plan must match the graph: every input and output it names exists with a type the runtime can feed,
    /// and every cache has a supported dtype (and, for preallocated caches, the graph's heads and head size).
    /// </summary>
    private static void CheckPlan(string path, CachePlan plan, InferenceSession session)
    {
        var inputs = session.InputMetadata;
        var outputs = session.OutputMetadata;
        string Where(string what) => $"{path}: the cache plan names {what}";
        NodeMetadata Input(string name, string what) => inputs.TryGetValue(name, out var m) ? m
            : throw new MixAttentionException($"{Where($"input '{name}' ({what})")}, but the model has no such input; its inputs are {List(inputs.Keys)}. The plan and the graph disagree: convert the model again.");
        void Output(string name, string what)
        {
            if (!outputs.ContainsKey(name))
                throw new MixAttentionException($"{Where($"output '{name}' ({what})")}, but the model has no such output; its outputs are {List(outputs.Keys)}. The plan and the graph disagree: convert the model again.");
        }
        void IntInput(string? name, string what, bool int32Only)
        {
            if (name is null) return;
            var t = Input(name, what).ElementDataType;
            if (int32Only ? t != TensorElementType.Int32 : t is not (TensorElementType.Int32 or TensorElementType.Int64))
                throw new MixAttentionException($"{path}: input '{name}' ({what}) is {t}; the runtime feeds {(int32Only ? "int32" : "int32 or int64")}.");
        }
        IntInput(plan.PositionIds, "position ids", int32Only: false);
        IntInput(plan.AttentionMask, "attention mask", int32Only: false);
        IntInput(plan.PastLengths, "past lengths", int32Only: true);
        IntInput(plan.NewLengths, "new lengths", int32Only: true);
        bool inPlace = plan.Caches.All(c => c.Capacity != CapacityRule.Growing);
        if (inPlace && plan.PastLengths is null)
            throw new MixAttentionException($"{path}: the cache plan has preallocated caches but names no past_lengths input; the runtime cannot tell the ops where each sequence is. Convert the model again.");
        foreach (var c in plan.Caches)
        {
            string what = $"cache of layer {c.Owner}";
            TensorElementType type;
            try { (type, _) = KvCacheSet.ElementTypeOf(c.StorageDType, what); }
            catch (MixAttentionException e) { throw new MixAttentionException($"{path}: {e.Message}", e); }
            foreach (var (name, kind) in new[] { (c.PastKey, "past key"), (c.PastValue, "past value") })
            {
                var m = Input(name, $"{kind} of the {what}");
                if (m.ElementDataType != type)
                    throw new MixAttentionException($"{path}: the cache plan says the {what} is {c.StorageDType} ({type}), but input '{name}' is {m.ElementDataType}. Convert the model again.");
                if (!inPlace) continue;
                var d = m.Dimensions;
                if (d.Length != 4)
                    throw new MixAttentionException($"{path}: input '{name}' ({kind} of the {what}) has rank {d.Length}; a preallocated cache is bound as [batch, kv_heads, capacity, head_size] (rank 4).");
                // The runtime allocates from the plan's numbers and binds them as this input: the graph must state the
                // same heads and head size (a symbolic axis would let a plan that lies go unchecked into the ops).
                CacheShape(path, "input", name, kind, what, d, c, plan.TokenMajorPools);
            }
            Output(c.PresentKey, $"present key of the {what}");
            Output(c.PresentValue, $"present value of the {what}");
            if (!inPlace) continue;
            // The same memory is bound as the present output: a declared shape must be the same [batch, heads, C, D].
            foreach (var (name, kind) in new[] { (c.PresentKey, "present key"), (c.PresentValue, "present value") })
            {
                if (outputs[name].ElementDataType != type)
                    throw new MixAttentionException($"{path}: the cache plan says the {what} is {c.StorageDType} ({type}), but output '{name}' is {outputs[name].ElementDataType}. Convert the model again.");
                if (outputs[name].Dimensions is { Length: > 0 } d)
                    CacheShape(path, "output", name, kind, what, d, c, plan.TokenMajorPools);
            }
        }
    }

    /// <summary>
    /// A preallocated cache is bound as [MaxBatch rows, heads, capacity, head size]: the graph must state the plan's heads
    /// and head size as fixed axes (a symbolic one would let a plan that lies go unchecked into the ops) and leave the
    /// batch and capacity axes symbolic (the session chooses them).
    /// </summary>
    private static void CacheShape(string path, string direction, string name, string kind, string what, int[] d, CacheEntry c, bool tokenMajorPools)
    {
        string Shape() => "[" + string.Join(", ", d.Select(x => x < 0 ? "?" : x.ToString(System.Globalization.CultureInfo.InvariantCulture))) + "]";
        if (d.Length != 4)
            throw new MixAttentionException($"{path}: {direction} '{name}' ({kind} of the {what}) has rank {d.Length}; a preallocated cache is bound as [batch, kv_heads, capacity, head_size] (rank 4).");
        if (c.BlockSize is { } tokenMajorBs && tokenMajorPools)
        {
            // ORT's PagedAttention pool [blocks, block_size, heads, D].
            if (d[0] >= 0 || d[1] != tokenMajorBs || d[2] != c.KvNumHeads || d[3] != c.HeadSize)
                throw new MixAttentionException($"{path}: {direction} '{name}' has shape {Shape()} but the cache plan says a paged pool [blocks, {tokenMajorBs}, {c.KvNumHeads}, {c.HeadSize}] (PagedAttention's token-major order) with a symbolic block count. Convert the model again.");
            return;
        }
        if (d[1] != c.KvNumHeads || d[3] != c.HeadSize)
            throw new MixAttentionException($"{path}: {direction} '{name}' has shape {Shape()} but the cache plan says {c.KvNumHeads} KV heads of size {c.HeadSize}; a preallocated cache needs both axes fixed in the graph and equal to the plan. Convert the model again.");
        if (c.BlockSize is { } bs)
        {
            // A paged pool [blocks, heads, block_size, D]: the session chooses the block count; the block size is the plan's.
            if (d[0] >= 0 || d[2] != bs)
                throw new MixAttentionException($"{path}: {direction} '{name}' has shape {Shape()} but the cache plan says a paged pool [blocks, {c.KvNumHeads}, {bs}, {c.HeadSize}] with a symbolic block count. Convert the model again.");
            return;
        }
        if (d[0] >= 0 || d[2] >= 0)
            throw new MixAttentionException($"{path}: {direction} '{name}' has shape {Shape()} with a fixed batch or capacity axis; the runtime binds its own batch slots and cache capacity there, so both must be symbolic. Convert the model again.");
    }

    /// <summary>The model file.</summary>
    public string Path { get; }
    /// <summary>The ORT session. <see cref="ObjectDisposedException"/> once the model is disposed.</summary>
    public InferenceSession Session
    {
        get
        {
            ThrowIfDisposed();
            return _session;
        }
    }

    /// <summary>True once <see cref="Dispose"/> was called (sessions still open keep the ORT session alive until they close).</summary>
    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>The ORT session for the decoding sessions, which hold a reference (valid even after <see cref="Dispose"/>).</summary>
    internal InferenceSession OrtSession => _session;
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
        ArgumentNullException.ThrowIfNull(path);
        options ??= new ModelOptions();
        if (string.IsNullOrEmpty(path) || path.Contains('\0') || !File.Exists(path)) throw new MixAttentionException($"model not found: {path.Replace("\0", "\\0")}");
        // ORT resolves external data itself, with a lexical check only: refuse first what the converter would
        // (data that leads out of the model's folder through a link, FIFOs, devices; docs/security.md).
        if (options.CheckModelFiles) global::MixAttention.Onnx.Onnx.OnnxModel.Load(path);
        return Create(path, options, so => new InferenceSession(path, so));
    }

    /// <summary>
    /// A model from serialized bytes (a candidate the layout search built in memory, never written to disk):
    /// <paramref name="label"/> names it in messages; external weights are resolved in <paramref name="externalDataFolder"/>
    /// (the source model's folder, which the converter's checks already vetted).
    /// </summary>
    internal static MixAttentionModel OpenBytes(byte[] model, string label, string? externalDataFolder, ModelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new ModelOptions();
        return Create(label, options, so =>
        {
            if (externalDataFolder is not null) so.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", externalDataFolder);
            return new InferenceSession(model, so);
        });
    }

    private static MixAttentionModel Create(string path, ModelOptions options, Func<SessionOptions, InferenceSession> load)
    {
        if (options.DeviceId < 0) throw new MixAttentionException($"ModelOptions.DeviceId must be >= 0, got {options.DeviceId}.");
        if (options.CudaGraphDecode && options.Device != ExecutionDevice.Cuda)
            throw new MixAttentionException($"ModelOptions.CudaGraphDecode needs ModelOptions.Device = Cuda (CUDA graphs are a CUDA execution provider feature); got Device = {options.Device}. Turn CudaGraphDecode off or run on Cuda.");
        if (options.IntraOpNumThreads < 0) throw new MixAttentionException($"ModelOptions.IntraOpNumThreads must be >= 0 (0 = ORT's default), got {options.IntraOpNumThreads}.");
        var owned = options.SessionOptions is null ? new SessionOptions() : null;
        var so = options.SessionOptions ?? owned!;
        InferenceSession? session = null;
        try
        {
            if (owned is not null)
            {
                if (options.IntraOpNumThreads > 0) owned.IntraOpNumThreads = options.IntraOpNumThreads;
                if (options.Device == ExecutionDevice.Cuda) AppendCuda(owned, options.DeviceId, options.CudaGraphDecode);
            }
            // The op library is harmless for a model that does not use it; register it whenever it is present.
            var opLib = options.OpLibraryPath ?? (Native.NativeLibraryPath.Exists ? Native.NativeLibraryPath.Path : null);
            if (opLib is not null) so.RegisterCustomOpLibrary(opLib);
            if (options.RequireInPlace) so.AddSessionConfigEntry(OpSpec.ConfigRequireInPlace, "1");
            try
            {
                try
                {
                    session = load(so);
                }
                catch (OnnxRuntimeException e) when (e.Message.Contains("ai.onnx.contrib", StringComparison.Ordinal) && OrtExtensionsLibrary.Find() is { } ext)
                {
                    so.RegisterCustomOpLibrary(ext);
                    session = load(so);
                }
            }
            catch (OnnxRuntimeException e) when (e.Message.Contains("Unregistered TensorElementType", StringComparison.Ordinal))
            {
                // ORT 1.31's C# API cannot describe a float8e4m3fn graph input (docs/ops.md, "Quantized caches"), so a
                // converted model with fp8 caches cannot be opened from .NET; its graph is fine for ORT's C/C++/Python APIs.
                throw new MixAttentionException($"{path}: ONNX Runtime's C# API cannot describe this model's inputs ({FirstLine(e.Message)}): " +
                    "fp8 caches (float8e4m3fn) have no C# element type in ORT 1.31. Run it through ORT's C, C++ or Python API, or convert with --kv-dtype int8.", e);
            }
            catch (OnnxRuntimeException e) when (options.Device != ExecutionDevice.Cuda && e.Message.Contains("PagedAttention", StringComparison.Ordinal))
            {
                // Without a kernel on the CPU, ORT first casts the node's fp16 inputs to fp32 and then refuses the types.
                throw new MixAttentionException($"{path} uses ONNX Runtime's PagedAttention (converted with --backend ort-gqa --paged), which ONNX Runtime implements on CUDA only; " +
                    $"open it with ExecutionDevice.Cuda, or convert with --backend ops --paged for paged caches on the CPU. (ONNX Runtime: {FirstLine(e.Message)})", e);
            }
            catch (OnnxRuntimeException e) when (opLib is null && e.Message.Contains(OpSpec.Domain, StringComparison.Ordinal))
            {
                throw new MixAttentionException($"{path} uses the {OpSpec.Domain} ops but {Native.NativeLibraryPath.FileName} was not found.", e);
            }
            catch (OnnxRuntimeException e)
            {
                // The model file is the input: ORT refusing to load it (bad graph, types, shapes, attributes) is the
                // input's fault, reported as such (the CLI's exit 2), with ORT's own first line.
                throw new MixAttentionException($"{path}: ONNX Runtime cannot load this model: {FirstLine(e.Message)}", e);
            }
            CachePlan? plan = session.ModelMetadata.CustomMetadataMap.TryGetValue(CachePlan.MetadataKey, out var json) ? CachePlan.FromJson(json) : null;
            if (options.Device == ExecutionDevice.Cuda && owned is not null && plan is { RunsOnCustomOps: true } && opLib is not null)
                RequireCudaKernels(path, opLib);
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
    /// Refuses a CUDA session of an ops-backend model when the op library is a CPU-only build: ORT would silently place
    /// every attention node on the CPU and copy the caches across each step (a library without the export is trusted).
    /// </summary>
    internal static void RequireCudaKernels(string path, string opLib)
    {
        if (Native.OpLibraryProviders.Query(opLib) is { } providers && !providers.Contains(Native.OpLibraryProviders.Cuda))
            throw new MixAttentionException($"{path} runs on the {OpSpec.Domain} ops and CUDA was requested (ModelOptions.Device = Cuda), " +
                $"but {opLib} is built without CUDA kernels (it has {string.Join(", ", providers)}): ONNX Runtime would run every attention " +
                "layer on the CPU. Use the op library built with -DMIXATTN_CUDA=ON (docs/gpu.md), or open the model with ExecutionDevice.Cpu.");
    }

    /// <summary>Appends the CUDA execution provider, turning "the provider or its CUDA libraries cannot be loaded" into one clear error.</summary>
    private static void AppendCuda(SessionOptions options, int deviceId, bool cudaGraph)
    {
        const string hint = "Install the CUDA runtime, cuBLAS and cuDNN versions this ONNX Runtime build was made for (on the library path) on a machine with an NVIDIA GPU, or open the model with ExecutionDevice.Cpu.";
        string[] available;
        try { available = OrtEnv.Instance().GetAvailableProviders(); }
        catch (Exception e) when (e is OnnxRuntimeException or DllNotFoundException or EntryPointNotFoundException)
        {
            throw new MixAttentionException($"CUDA was requested (ModelOptions.Device = Cuda) but ONNX Runtime cannot be queried for its execution providers: {e.Message}", e);
        }
        if (!available.Contains("CUDAExecutionProvider"))
            throw new MixAttentionException($"CUDA was requested (ModelOptions.Device = Cuda) but this ONNX Runtime build has no CUDA execution provider (it has {string.Join(", ", available)}); reference Microsoft.ML.OnnxRuntime.Gpu.Linux.");
        try
        {
            if (cudaGraph)
            {
                using var cuda = new OrtCUDAProviderOptions();
                cuda.UpdateOptions(new Dictionary<string, string>
                {
                    ["device_id"] = deviceId.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    ["enable_cuda_graph"] = "1",
                });
                options.AppendExecutionProvider_CUDA(cuda);
            }
            else options.AppendExecutionProvider_CUDA(deviceId);
        }
        catch (Exception e) when (e is OnnxRuntimeException or DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            throw new MixAttentionException($"CUDA was requested (ModelOptions.Device = Cuda, device {deviceId}) but the CUDA execution provider cannot be loaded: {FirstLine(e.Message)} {hint}", e);
        }
    }

    private static string FirstLine(string message)
    {
        var line = message.Split('\n', 2)[0].Trim();
        return line.EndsWith('.') ? line : line + ".";
    }

    /// <summary>
    /// A decoding session with its own caches: <see cref="InPlaceCacheSession"/> (in place, continuous batching) for
    /// converted models, <see cref="GrowingCacheSession"/> (growing past/present per sequence) otherwise.
    /// </summary>
    public IDecoderSession CreateSession(SessionConfig? config = null)
    {
        ThrowIfDisposed();
        if (!IsInPlace && Options.CudaGraphDecode)
            throw new MixAttentionException($"{Path}: ModelOptions.CudaGraphDecode needs a converted model with preallocated caches (an InPlaceCacheSession); this model's caches grow each step, so its decode steps cannot be captured in a CUDA graph.");
        return IsInPlace ? new InPlaceCacheSession(this, config) : new GrowingCacheSession(this, config);
    }

    private int _nextGraphId;

    /// <summary>A fresh <c>gpu_graph_id</c> for a session's decode graph (one per session: shapes differ between sessions).</summary>
    internal int NextGraphId() => Interlocked.Increment(ref _nextGraphId) - 1;

    internal OrtAllocator? DeviceAllocator()
    {
        if (Options.Device == ExecutionDevice.Cpu) return null;
        lock (_allocatorGate)
        {
            if (_deviceAllocator is not null) return _deviceAllocator;
            try
            {
                return _deviceAllocator = new OrtAllocator(_session, CacheMemoryInfo);
            }
            catch (OnnxRuntimeException e)
            {
                throw new MixAttentionException(
                    $"{Path}: caches were asked for on CUDA device {Options.DeviceId} (ModelOptions.Device = Cuda) but the ORT session has no CUDA allocator: " +
                    (Options.SessionOptions is null ? "the CUDA execution provider did not register one." : "the SessionOptions passed in ModelOptions have no CUDA execution provider (call AppendExecutionProvider_CUDA on them).") +
                    $" ({FirstLine(e.Message)})", e);
            }
        }
    }

    private void ThrowIfDisposed()
    {
        if (IsDisposed)
            throw new ObjectDisposedException(nameof(MixAttentionModel), $"this {nameof(MixAttentionModel)} ({Path}) was disposed; open the model again.");
    }

    /// <summary>References held: 1 for the model itself until disposed, plus one per open decoding session; 0 once released.</summary>
    internal int References => Volatile.Read(ref _references);

    /// <summary>A decoding session starts using the model; fails once the model is disposed.</summary>
    internal void AddReference()
    {
        while (true)
        {
            int n = Volatile.Read(ref _references);
            if (n == 0 || IsDisposed)
                throw new ObjectDisposedException(nameof(MixAttentionModel), $"this {nameof(MixAttentionModel)} ({Path}) was disposed; open the model again.");
            if (Interlocked.CompareExchange(ref _references, n + 1, n) == n) return;
        }
    }

    /// <summary>A decoding session is done with the model; the last reference releases the ORT session.</summary>
    internal void Release()
    {
        if (Interlocked.Decrement(ref _references) != 0) return;
        _deviceAllocator?.Dispose();
        if (_ownsSession) _session.Dispose();
        _ownedOptions?.Dispose();
        if (!ReferenceEquals(CacheMemoryInfo, OrtMemoryInfo.DefaultInstance)) CacheMemoryInfo.Dispose();
    }

    /// <summary>
    /// Disposes the ORT session (and the options it created) — at once when no decoding session is open, else when the
    /// last one is disposed. A second call does nothing.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0) Release();
    }
}
