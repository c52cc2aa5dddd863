using System.CommandLine;
using MixAttention.Onnx.Cli;

// mixattn: every verb parses its options, calls one library entry point and renders the result.
var root = new RootCommand("MixAttention.Onnx: convert exported decoder ONNX models to sliding-window / shared-KV layouts and run them.");
root.Options.Add(CliOptions.Verbose);
root.Subcommands.Add(InspectVerb.Create());
root.Subcommands.Add(ConvertVerb.Create());
foreach (var verb in ExtraVerbs.Create())
    root.Subcommands.Add(verb);
return await Cli.RunAsync(root, args);
