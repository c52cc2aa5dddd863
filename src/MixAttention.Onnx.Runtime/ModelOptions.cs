using Microsoft.ML.OnnxRuntime;

namespace MixAttention.Onnx.Runtime;

/// <summary>How <see cref="MixAttentionModel.Open"/> creates its ORT session.</summary>
public sealed record ModelOptions
{
    /// <summary>Execution device. With caller <see cref="SessionOptions"/>, the caller appends the execution provider; this says where caches are allocated.</summary>
    public ExecutionDevice Device { get; init; } = ExecutionDevice.Cpu;

    /// <summary>CUDA device ordinal.</summary>
    public int DeviceId { get; init; }

    /// <summary>
    /// Caller's session options, used as they are (execution providers, threads, optimisation level); the model
    /// adds the op library (and ORT Extensions when the graph needs them) to them. The caller keeps ownership and
    /// must keep them alive while the model is open. Null: the model creates and owns its options.
    /// </summary>
    public SessionOptions? SessionOptions { get; init; }

    /// <summary>Intra-op threads when the model creates its own options (0 = ORT's default).</summary>
    public int IntraOpNumThreads { get; init; }

    /// <summary>
    /// Set <c>mixattention.require_inplace = 1</c>: the ops fail instead of copying a cache when past and present
    /// are not the same buffer (a binding bug would otherwise only cost speed). Default on.
    /// </summary>
    public bool RequireInPlace { get; init; } = true;
    /// <summary>
    /// Before ORT opens the model, load it as the converter does (OnnxModel.Load: structure validated, external data
    /// that leads out of the model's folder through a link, or is a FIFO or device, refused; docs/security.md). Costs one
    /// parse of the model file. Off: ORT's own, lexical, check only.
    /// </summary>
    public bool CheckModelFiles { get; init; } = true;

    /// <summary>The com.mixattention op library; null = <see cref="Native.NativeLibraryPath"/>.</summary>
    public string? OpLibraryPath { get; init; }

    /// <summary>
    /// Run each decode step of a <see cref="InPlaceCacheSession"/> as one CUDA graph replay (ORT's <c>enable_cuda_graph</c>)
    /// instead of launching every node: the step always runs all <see cref="SessionConfig.MaxBatch"/> rows with one token
    /// (rows not in the step get <c>new_lengths = 0</c>) over fixed device buffers. Prefill runs as usual (not captured).
    /// Only with <see cref="ExecutionDevice.Cuda"/>, a converted model whose plan has a <c>new_lengths</c> input and no
    /// attention mask, and every node on the CUDA execution provider. With caller <see cref="SessionOptions"/>, the caller
    /// must enable <c>enable_cuda_graph</c> in the CUDA provider options it appends. Default off.
    /// </summary>
    public bool CudaGraphDecode { get; init; }
}
