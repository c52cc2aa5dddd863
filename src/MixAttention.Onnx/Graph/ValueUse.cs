using MixAttention.Onnx.Onnx.Proto;

namespace MixAttention.Onnx.Graph;

/// <summary>One use of a value: the consuming node and the input slot.</summary>
internal readonly record struct ValueUse(NodeProto Node, int InputIndex);
