using System.CommandLine;
using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Runtime.Tuning;

namespace MixAttention.Onnx.Cli;

/// <summary>How <c>eval</c> and <c>tune</c> run the models over the text: the same flags, read into the same <see cref="EvaluationOptions"/>.</summary>
internal sealed class EvaluationFlags(string contextNote)
{
    public readonly Option<int?> Context = new("--context") { HelpName = "N", Description = "Tokens per sequence the text is cut into (default: 4 × the largest window, at least 64)" + contextNote + "." };
    public readonly Option<int> PrefillChunk = new("--prefill-chunk") { HelpName = "N", Description = "Tokens per prefill call.", DefaultValueFactory = _ => 64 };
    public readonly Option<int> DecodeTokens = new("--decode-tokens") { HelpName = "N", Description = "Last tokens of each sequence fed as decode steps.", DefaultValueFactory = _ => 8 };
    public readonly Option<string> Device = CreateDevice();

    public IEnumerable<Option> All => new Option[] { Context, PrefillChunk, DecodeTokens, Device };

    private static Option<string> CreateDevice()
    {
        var device = new Option<string>("--device") { Description = "cpu or cuda.", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        return device;
    }

    /// <summary>The options as parsed; <paramref name="buckets"/> only where the verb reports by position.</summary>
    public EvaluationOptions Read(ParseResult parse, int? buckets = null)
    {
        var options = new EvaluationOptions
        {
            Context = parse.GetValue(Context),
            PrefillChunk = parse.GetValue(PrefillChunk),
            DecodeTokens = parse.GetValue(DecodeTokens),
            Model = new ModelOptions { Device = parse.GetValue(Device) == "cuda" ? ExecutionDevice.Cuda : ExecutionDevice.Cpu },
        };
        return buckets is { } b ? options with { Buckets = b } : options;
    }
}
