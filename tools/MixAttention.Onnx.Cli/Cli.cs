using System.CommandLine;
using Spectre.Console;

namespace MixAttention.Onnx.Cli;

/// <summary>Runs a parsed command with one error policy: user errors print one line, no stack trace unless --verbose.</summary>
internal static class Cli
{
    public static async Task<int> RunAsync(RootCommand root, string[] args)
    {
        var parse = root.Parse(args);
        bool verbose = parse.GetValue(CliOptions.Verbose);
        if (parse.Errors.Count > 0)
        {
            // An unknown option or a value outside an option's choices is bad input: exit 2 with one line (docs/cli.md).
            Error(parse.Errors[0].Message.ReplaceLineEndings(" ").Replace("\t", "", StringComparison.Ordinal));
            return ExitCodes.UserError;
        }
        try
        {
            return await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (Exception e) when (Unwrap(e) is MixAttentionException user)
        {
            Error(user.Message);
            if (verbose) Console.Error.WriteLine(user.ToString());
            return ExitCodes.UserError;
        }
        catch (Exception e) when (Unwrap(e) is Microsoft.ML.OnnxRuntime.OnnxRuntimeException ort)
        {
            // ONNX Runtime failing on the model the user gave (a graph that loads but cannot run: shapes, attributes
            // or a cache plan that disagree with its ops) is the input's fault: exit 2, ORT's first line.
            Error($"ONNX Runtime failed running this model: {ort.Message.Split('\n', 2)[0].Trim()}");
            if (verbose) Console.Error.WriteLine(ort.ToString());
            return ExitCodes.UserError;
        }
        catch (Exception e)
        {
            Error($"{e.GetType().Name}: {e.Message}");
            if (verbose) Console.Error.WriteLine(e.ToString());
            else Console.Error.WriteLine("(run again with --verbose for details)");
            return ExitCodes.InternalError;
        }
    }

    private static Exception Unwrap(Exception e) =>
        e is AggregateException { InnerExceptions.Count: 1 } a ? Unwrap(a.InnerExceptions[0]) :
        e is System.Reflection.TargetInvocationException { InnerException: { } inner } ? Unwrap(inner) : e;

    public static void Error(string message)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        if (Console.IsErrorRedirected) console.Profile.Width = 1000;
        console.MarkupLine($"[red]error:[/] {Markup.Escape(message)}");
    }

    /// <summary>Human-readable byte count.</summary>
    public static string Bytes(long bytes)
    {
        string[] units = { "B", "KiB", "MiB", "GiB", "TiB" };
        double v = bytes;
        int u = 0;
        while (v >= 1024 && u < units.Length - 1) { v /= 1024; u++; }
        return u == 0 ? $"{bytes} B" : $"{v:0.##} {units[u]}";
    }
}
