namespace MixAttention.Onnx.Cli;

/// <summary>Exit codes, documented in docs/cli.md.</summary>
internal static class ExitCodes
{
    public const int Ok = 0;
    public const int Failed = 1;      // the command ran and its check failed (e.g. verify --expect-exact)
    public const int UserError = 2;   // bad input: model, layout, options
    public const int InternalError = 3;
}
