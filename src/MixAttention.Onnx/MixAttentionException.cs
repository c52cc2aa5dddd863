namespace MixAttention.Onnx;

/// <summary>
/// Base of every error a user can cause and fix (bad model, bad layout, bad option). Its message is
/// complete on its own: the CLI prints it without a stack trace and exits non-zero.
/// </summary>
public class MixAttentionException : Exception
{
    /// <summary>Creates the exception with a user-facing message.</summary>
    public MixAttentionException(string message) : base(message) { }

    /// <summary>Creates the exception with a user-facing message and the low-level cause.</summary>
    public MixAttentionException(string message, Exception? inner) : base(message, inner) { }
}
