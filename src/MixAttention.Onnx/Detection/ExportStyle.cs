namespace MixAttention.Onnx.Detection;

/// <summary>How the exporter wrote the attention of a layer.</summary>
public enum ExportStyle
{
    /// <summary>TorchScript / optimum: MatMul → scale → mask → Softmax → MatMul, past concatenated with Concat.</summary>
    Decomposed,
    /// <summary>torch.onnx dynamo: ONNX <c>Attention</c> (opset 23/24).</summary>
    OnnxAttention,
    /// <summary>ORT transformers optimizer: <c>com.microsoft.Attention</c> with packed QKV weights and packed past [2,B,H,S,D].</summary>
    OrtAttention,
    /// <summary>ORT transformers optimizer: <c>com.microsoft.MultiHeadAttention</c>.</summary>
    OrtMultiHeadAttention,
    /// <summary>onnxruntime-genai builder: <c>com.microsoft.GroupQueryAttention</c>.</summary>
    GroupQueryAttention,
}
