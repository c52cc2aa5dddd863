using MixAttention.Onnx.Layouts;
using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Runtime.Tuning;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Tuning;

/// <summary>Candidates are converted and opened from bytes: nothing is written, external weights still resolve.</summary>
[TestClass]
public sealed class CandidateModelsTests
{
    /// <summary>
    /// A GQA model whose weights live in an external file beside it: a candidate opened from bytes finds them in the
    /// source's folder (not the working directory), and building candidates writes no file anywhere near the source.
    /// </summary>
    [TestMethod]
    public void InMemoryCandidatesReadExternalWeightsAndWriteNothing()
    {
        var dir = TestPaths.TempDir();
        var (path, _) = SyntheticModel.Write(Path.Combine(dir, "in"), layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 128, vocab: 100);
        var before = Directory.GetFiles(dir, "*", SearchOption.AllDirectories).Order().ToArray();
        var models = new CandidateModels(path);
        foreach (var spec in new[] { "0_1", "0_0", "0s4_0s4" })
        {
            using var model = models.Open(LayoutParser.Parse(spec, models.Context));
            Assert.IsNotNull(model.Plan, spec);
            Assert.AreEqual(spec, string.Join('_', Enumerable.Range(0, 2).Select(l => model.Plan!.Windows[l] > 0 ? $"{model.Plan.KvSource[l]}s{model.Plan.Windows[l]}" : $"{model.Plan.KvSource[l]}")));
            using var session = model.CreateSession(new SessionConfig { MaxBatch = 1, MaxLength = 16, PrefillChunk = 4 });
            var logits = session.Prefill(session.AddSequence(), new long[] { 1, 2, 3, 4, 5 });
            Assert.HasCount(100, logits);
            Assert.IsTrue(logits.All(float.IsFinite), spec);
        }
        CollectionAssert.AreEqual(before, Directory.GetFiles(dir, "*", SearchOption.AllDirectories).Order().ToArray());
    }
}
