using System.Text.RegularExpressions;
using MixAttention.Onnx.Tests.Cli;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Docs;

/// <summary>
/// docs/cli.md's verb table matches <c>mixattn VERB --help</c>: the same verbs, and every option the help lists is in
/// the row's synopsis (by its long name or an alias; <c>--json</c> has its own column) and no option the synopsis names
/// is missing from the help. The help texts carry no work notes (issue numbers, TODO, UNTESTED).
/// </summary>
[TestClass]
public sealed partial class CliDocTests
{
    /// <summary>Options every verb has, described once in the text under the table.</summary>
    private static readonly string[] Common = ["--help", "--verbose", "--json"];

    [GeneratedRegex(@"^\| `(?<verb>[a-z]+)(?<synopsis>[^`]*)` \|", RegexOptions.Multiline)]
    private static partial Regex VerbRow();

    [GeneratedRegex(@"(?<![\w-])--?[a-zA-Z][\w-]*")]
    private static partial Regex OptionName();

    [GeneratedRegex(@"issue\s*#?\d|\bTODO\b|\bFIXME\b|\bUNTESTED\b|\b20\d\d-\d\d-\d\d\b", RegexOptions.IgnoreCase)]
    private static partial Regex WorkNote();

    private static Dictionary<string, string> DocumentedVerbs() =>
        VerbRow().Matches(File.ReadAllText(Path.Combine(TestPaths.RepoRoot, "docs", "cli.md")))
            .ToDictionary(m => m.Groups["verb"].Value, m => m.Groups["synopsis"].Value);

    /// <summary>Each option of a help text as its names (<c>-o, --output</c>), from the part of the line before the description.</summary>
    private static List<string[]> HelpOptions(string help)
    {
        var options = new List<string[]>();
        bool inOptions = false;
        foreach (var line in help.Split('\n'))
        {
            if (line.StartsWith("Options:", StringComparison.Ordinal)) { inOptions = true; continue; }
            if (!inOptions || !line.StartsWith("  -", StringComparison.Ordinal)) continue;
            var names = Regex.Split(line.Trim(), @"\s{2,}")[0];
            options.Add([.. OptionName().Matches(names.Split('<')[0]).Select(m => m.Value)]);
        }
        return options;
    }

    private static string Help(params string[] args)
    {
        var (code, stdout, stderr) = InspectCliTests.Run([.. args, "--help"]);
        Assert.AreEqual(0, code, stderr);
        return stdout;
    }

    [TestMethod]
    public void TheTableListsEveryVerb()
    {
        var root = Help();
        var commands = root[root.IndexOf("Commands:", StringComparison.Ordinal)..].Split('\n')
            .Select(l => Regex.Match(l, @"^  ([a-z]+)\b")).Where(m => m.Success).Select(m => m.Groups[1].Value).ToHashSet();
        CollectionAssert.AreEquivalent(commands.ToList(), DocumentedVerbs().Keys.ToList());
    }

    [TestMethod]
    public void EverySynopsisMatchesItsHelp()
    {
        var problems = new List<string>();
        foreach (var (verb, synopsis) in DocumentedVerbs())
        {
            var help = Help(verb);
            var documented = OptionName().Matches(synopsis).Select(m => m.Value).ToHashSet();
            var options = HelpOptions(help);
            Assert.IsNotEmpty(options, $"{verb}: no options parsed from its help");
            foreach (var names in options.Where(n => !n.Intersect(Common).Any()))
                if (!names.Any(documented.Contains))
                    problems.Add($"{verb}: {names.Last()} is in --help but not in docs/cli.md");
            var known = options.SelectMany(n => n).ToHashSet();
            foreach (var name in documented.Where(d => !known.Contains(d)))
                problems.Add($"{verb}: {name} is in docs/cli.md but not in --help");
            foreach (Match note in WorkNote().Matches(help))
                problems.Add($"{verb}: its help has a work note: '{note.Value}'");
        }
        Assert.IsEmpty(problems, string.Join("\n", problems));
    }
}
