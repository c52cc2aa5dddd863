using System.Text.RegularExpressions;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Docs;

/// <summary>
/// Every repository path the Markdown files name exists: paths that start with a top-level folder of the
/// repository (<c>docs/…</c>, <c>tools/…</c>, <c>graphs/…</c>, …) anywhere in the text, code blocks included, and
/// relative link targets (<c>[text](../x)</c>, resolved from the document's folder). Paths with placeholders
/// (<c>*</c>, <c>{…}</c>, <c>&lt;…&gt;</c>, <c>$VAR</c>) and build outputs (<see cref="Generated"/>) are not checked.
/// </summary>
[TestClass]
public sealed partial class DocPathTests
{
    /// <summary>Folders that builds and tools create (git-ignored): docs may name paths inside them.</summary>
    private static readonly string[] Generated = ["native/build", "out/", "artifacts/", ".ortgpu", ".ortinc", ".pub", "bin/", "obj/", "TestResults/"];

    private static readonly string[] SkippedFolders = [".git", "bin", "obj", "build", "TestResults", "node_modules", "out", "artifacts"];

    [GeneratedRegex(@"(?<![\w./\-~$])((?:[\w.\-*{},<>$…]+/)+[\w.\-*{},<>$…]*)")]
    private static partial Regex PathLike();

    [GeneratedRegex(@"\]\(([^)\s#]+)(?:#[^)]*)?\)")]
    private static partial Regex LinkTarget();

    /// <summary>Every Markdown file of the repository (build outputs left out).</summary>
    private static IEnumerable<string> MarkdownFiles(string dir)
    {
        foreach (var f in Directory.GetFiles(dir, "*.md")) yield return f;
        foreach (var d in Directory.GetDirectories(dir))
            if (!SkippedFolders.Contains(Path.GetFileName(d)) && !Path.GetFileName(d).StartsWith('.') || Path.GetFileName(d) == ".ci")
                foreach (var f in MarkdownFiles(d)) yield return f;
    }

    /// <summary>The repository paths a Markdown text names that do not exist, as "line: path".</summary>
    /// <summary>
    /// Files the repository keeps compressed, named as they are when unpacked (graphs/fixtures.tar.br →
    /// graphs/NAME/model.onnx, by tools/fixtures/unpack-fixtures.sh or the tests), with their folders.
    /// </summary>
    private static HashSet<string> PackedPaths(string root) => PackedPathCache.GetOrAdd(root, ReadPackedPaths);

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, HashSet<string>> PackedPathCache = new();

    private static HashSet<string> ReadPackedPaths(string root)
    {
        var paths = new HashSet<string>(StringComparer.Ordinal);
        if (!Directory.Exists(Path.Combine(root, "graphs"))) return paths;
        foreach (var archive in Directory.GetFiles(Path.Combine(root, "graphs"), "*.tar.br"))
            foreach (var member in PackedArchive.Members(archive))
                for (var p = "graphs/" + member; p.Length > "graphs".Length; p = p[..p.LastIndexOf('/')])
                    paths.Add(p);
        foreach (var file in Directory.GetFiles(Path.Combine(root, "graphs"), "*.br", SearchOption.AllDirectories))
            if (!file.EndsWith(".tar.br", StringComparison.Ordinal))
                paths.Add(Path.GetRelativePath(root, file[..^3]).Replace('\\', '/'));
        return paths;
    }

    internal static List<string> MissingPaths(string root, string docPath, string text)
    {
        var topLevel = Directory.GetDirectories(root).Select(Path.GetFileName).Where(n => n is not null && !SkippedFolders.Contains(n)).ToHashSet()!;
        var docDir = Path.GetDirectoryName(docPath)!;
        var missing = new List<string>();
        var lines = text.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            var line = lines[i];
            var cited = new List<(string Path, string Resolved)>();
            foreach (Match m in PathLike().Matches(line))
            {
                var p = m.Groups[1].Value.TrimEnd('.', ',', ':', ';');
                if (topLevel.Contains(p.Split('/')[0]))
                    cited.Add((p, Path.Combine(root, p)));
            }
            foreach (Match m in LinkTarget().Matches(line))
            {
                var p = m.Groups[1].Value;
                if (p.Contains("://") || p.StartsWith("mailto:", StringComparison.Ordinal)) continue;
                cited.Add((p, Path.GetFullPath(Path.Combine(docDir, p))));
            }
            foreach (var (p, resolved) in cited)
            {
                if (p.IndexOfAny(['*', '{', '}', '<', '>', '$', '…']) >= 0 || p.Contains("...", StringComparison.Ordinal)) continue;
                var relative = Path.GetRelativePath(root, resolved).Replace('\\', '/');
                if (Generated.Any(g => relative.StartsWith(g, StringComparison.Ordinal) || relative.Contains("/" + g, StringComparison.Ordinal))) continue;
                if (!File.Exists(resolved) && !Directory.Exists(resolved) && !PackedPaths(root).Contains(relative))
                    missing.Add($"{i + 1}: {p}");
            }
        }
        return missing;
    }

    [TestMethod]
    public void EveryPathTheDocsNameExists()
    {
        var root = TestPaths.RepoRoot;
        var docs = MarkdownFiles(root).ToList();
        Assert.IsTrue(docs.Any(d => d.EndsWith("docs/benchmarks.md", StringComparison.Ordinal)), "docs/benchmarks.md was not among the files checked");
        var report = docs.SelectMany(d => MissingPaths(root, d, File.ReadAllText(d)).Select(m => $"{Path.GetRelativePath(root, d)}:{m}")).ToList();
        Assert.IsEmpty(report, "paths named in the docs that do not exist:\n" + string.Join("\n", report));
    }

    /// <summary>The check itself finds a missing path, in prose, in a code block and as a relative link, and accepts existing ones.</summary>
    [TestMethod]
    public void TheCheckFindsAMissingPath()
    {
        var root = TestPaths.RepoRoot;
        var doc = Path.Combine(root, "docs", "x.md");
        const string text = "see `tools/gpu/results/raw.tar.xz` and docs/benchmarks.md\n```\nbash tools/gpu/nothere.sh\n```\n[plot](../tools/gpu/results/none.png) [ok](gpu.md) native/build/release/x";
        CollectionAssert.AreEqual(new[] { "1: tools/gpu/results/raw.tar.xz", "3: tools/gpu/nothere.sh", "5: ../tools/gpu/results/none.png" }, MissingPaths(root, doc, text));
    }
}
