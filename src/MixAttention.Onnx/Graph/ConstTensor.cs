using System.Buffers.Binary;

namespace MixAttention.Onnx.Graph;

/// <summary>A small constant: its dims and its elements as doubles (enough for scales, shapes and indices).</summary>
internal sealed record ConstTensor(long[] Dims, double[] Data)
{
    /// <summary>The single element of a scalar or one-element tensor.</summary>
    public double? Scalar => Data.Length == 1 ? Data[0] : null;
}
