using System.CommandLine;

namespace MixAttention.Onnx.Cli;

/// <summary>Options shared by every verb.</summary>
internal static class CliOptions
{
    /// <summary>Show stack traces on errors.</summary>
    public static readonly Option<bool> Verbose = new("--verbose", "-v") { Description = "Show full error details (stack traces).", Recursive = true };
}
