using System.CommandLine;

namespace MixAttention.Onnx.Cli;

/// <summary>Verbs added by later stages (convert, verify, generate, demo, bench).</summary>
internal static class ExtraVerbs
{
    public static IEnumerable<Command> Create() => new[] { VerifyVerb.Create(), EvalVerb.Create(), TuneVerb.Create(), GenerateVerb.Create(), DemoVerb.Create(), BenchVerb.Create(), WorkloadVerb.Create() };
}
