using Microsoft.ML.OnnxRuntime;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// The logits of a decode step left where the model computed them (<see cref="InPlaceCacheSession.DecodeOnDevice"/>):
/// device memory on CUDA, host memory on the CPU. <see cref="Tensor"/> is <c>[rows, 1, V]</c>; the i-th listed
/// sequence's logits are row <c>Rows[i]</c>. Owned by the session and valid until its next call: read or copy them
/// (e.g. with a sampling kernel on the same device) before then, and do not dispose the tensor.
/// </summary>
/// <param name="Tensor">The step's logits tensor <c>[rows, 1, V]</c> in the model's memory.</param>
/// <param name="Rows">For each sequence of the call, in order, its row in <paramref name="Tensor"/>.</param>
public sealed record DeviceLogits(OrtValue Tensor, IReadOnlyList<int> Rows)
{
    /// <summary>Where the tensor lives (CUDA device memory or CPU).</summary>
    public OrtMemoryInfo Location => Tensor.GetTensorMemoryInfo();
}
