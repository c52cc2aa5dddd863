using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using MixAttention.Onnx.Detection;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Zoo;

/// <summary>
/// docs/zoo.md holds the coverage table of the zoo: one row per architecture × exporter. This test measures the table
/// afresh (detection, native conversion against torch, a cai retrofit, refusals, and the exports torch could not make)
/// and fails when the document differs from it in anything but the last digit of a logit difference.
/// <c>bash tools/fixtures/zoo-coverage.sh</c> runs it and copies the fresh table into the document.
/// </summary>
[TestClass]
public sealed class ZooCoverageTests
{
    private const string Begin = "<!-- coverage:begin -->";
    private const string End = "<!-- coverage:end -->";

    /// <summary>Where the freshly measured table is written on every run (the script copies it from here).</summary>
    public static string FreshTablePath => Path.Combine(AppContext.BaseDirectory, "zoo-coverage.md");

    [TestMethod]
    public void DocsCoverageTableIsCurrent()
    {
        var table = Measure();
        File.WriteAllText(FreshTablePath, table);
        var doc = File.ReadAllText(Path.Combine(TestPaths.RepoRoot, "docs", "zoo.md"));
        int a = doc.IndexOf(Begin, StringComparison.Ordinal), b = doc.IndexOf(End, StringComparison.Ordinal);
        Assert.IsTrue(a >= 0 && b > a, $"docs/zoo.md has no {Begin} … {End} section");
        var documented = doc[(a + Begin.Length)..b].Trim();
        Assert.AreEqual(Mask(table.Trim()), Mask(documented),
            $"docs/zoo.md is out of date: run `bash tools/fixtures/zoo-coverage.sh` (fresh table: {FreshTablePath})");
    }

    /// <summary>The Δ column as its order of magnitude: the last digits of a float sum may differ between CPUs.</summary>
    private static string Mask(string table) =>
        System.Text.RegularExpressions.Regex.Replace(table, @"\b(\d)(\.\d)?e-0?(\d+)\b", m => "1e-" + m.Groups[3].Value);

    private static string Measure()
    {
        var sb = new StringBuilder();
        sb.AppendLine("| architecture | exporter | layers found | native | max \\|Δ\\| vs torch, 48 tokens | cai retrofit | notes |");
        sb.AppendLine("|---|---|---|---|---|---|---|");
        var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(ZooFixtures.Directory, "summary.json")))!;
        foreach (var arch in summary["architectures"]!.AsArray())
        {
            var name = arch!["arch"]!.GetValue<string>();
            foreach (var (exporter, export) in arch["exports"]!.AsObject())
            {
                if (!export!["exported"]!.GetValue<bool>())
                {
                    var why = export["why"]!.GetValue<string>().Split('\n')[0];
                    sb.AppendLine($"| {name} | {exporter} | – | – | – | – | torch could not export it: {Cell(why, 90)} |");
                    continue;
                }
                sb.AppendLine(Row(name, exporter, $"{name}-{exporter}"));
            }
        }
        return sb.ToString();
    }

    private static string Row(string arch, string exporter, string export)
    {
        var model = ZooFixtures.Model(export);
        var report = AttentionDetector.Detect(OnnxModel.Load(model));
        int total = ZooFixtures.Provenance(export)["model"]!["layers"]!.GetValue<int>();
        var found = $"{report.Sites.Count}/{total}" + (report.Sites.Any(s => s.SharesKvOf is not null) ? $" ({report.Sites.Count(s => s.SharesKvOf is not null)} sharing)" : "");
        if (!report.IsComplete)
        {
            var reason = report.Issues.FirstOrDefault(i => !i.Blocking)?.Message ?? report.Blocking[0].Message;
            return $"| {arch} | {exporter} | {found} | refused | – | – | {Cell(reason, 90)} |";
        }
        var reference = ZooFixtures.Reference(export);
        float diff = Compare.MaxAbsDiff(ZooFixtures.Decode(ZooFixtures.Convert(model, "native"), reference), reference.Logits);
        bool caiRuns = ZooFixtures.Decode(ZooFixtures.Convert(model, "cai", window: 4), reference).All(float.IsFinite);
        var unconverted = ZooFixtures.Provenance(export)["unconverted_on_ort"]!;
        var note = unconverted["matches_torch"]!.GetValue<bool>() ? "" :
            diff <= 1e-4f ? "the export alone differs from torch past its traced length; converted is exact" :
            "the export is not the torch model (torch's SDPA path drops this attention feature); converted = export";
        return $"| {arch} | {exporter} | {found} | {(diff <= 1e-4f ? "exact" : "converts")} | {diff.ToString("0.0e0", CultureInfo.InvariantCulture)} | {(caiRuns ? "runs" : "non-finite")} | {note} |";
    }

    private static string Cell(string text, int max)
    {
        var t = text.Replace("|", "/", StringComparison.Ordinal).Replace("\u001b", "", StringComparison.Ordinal).Trim();
        t = System.Text.RegularExpressions.Regex.Replace(t, @"\[\d+m", "");
        return t.Length <= max ? t : t[..max] + "…";
    }
}
