namespace MixAttention.Onnx.Onnx;

/// <summary>
/// A model file that cannot be used as given: not ONNX, truncated, or pointing at external data that is missing.
/// The message says what is wrong and where (file, tensor, node); the CLI prints it without a stack trace.
/// </summary>
public class OnnxFormatException : MixAttentionException
{
    /// <summary>Creates the exception with a user-facing message.</summary>
    public OnnxFormatException(string message) : base(message) { }

    /// <summary>Creates the exception with a user-facing message and the low-level cause.</summary>
    public OnnxFormatException(string message, Exception inner) : base(message, inner) { }
}
