using System.Text.Json.Nodes;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Cli;

/// <summary><c>mixattn workload</c>: sessions sized to one KV budget, contiguous against paged caches, and its input errors.</summary>
[TestClass]
public sealed class WorkloadCliTests
{
    // llama-gqa: 2 layers, 2 KV heads of 16, fp32. Native: 2 owners; a contiguous slot of 208 positions is
    // 2 owners x K,V x 2 heads x 208 x 16 x 4 B = 106,496 B; a paged block of 16 positions 8,192 B.
    private const string Budget = "0.0005"; // GiB: 536,870 B, 5 contiguous slots of 208 positions
    private const long BudgetBytes = (long)(0.0005 * (1L << 30));

    private static readonly Lazy<(string Contiguous, string Paged)> Models = new(() =>
    {
        var dir = TestPaths.TempDir();
        string contiguous = Path.Combine(dir, "native", "model.onnx"), paged = Path.Combine(dir, "paged", "model.onnx");
        foreach (var (output, extra) in new[] { (contiguous, Array.Empty<string>()), (paged, new[] { "--paged", "--block-size", "16" }) })
        {
            var (code, _, err) = InspectCliTests.Run(["convert", TestPaths.Fixture("llama-gqa"), "-o", output, "--layout", "native", "--check", "none", .. extra]);
            Assert.AreEqual(0, code, err);
        }
        return (contiguous, paged);
    });

    private static JsonArray Workload(string prompt, params string[] extra)
    {
        var (code, stdout, err) = InspectCliTests.Run(["workload", Models.Value.Contiguous, Models.Value.Paged, "--requests", "24", "--prompt", prompt,
            "--new", "8", "--budget-gib", Budget, "--prefill-chunk", "32", "--json", .. extra]);
        Assert.AreEqual(0, code, err);
        return JsonNode.Parse(stdout)!["results"]!.AsArray();
    }

    [TestMethod]
    public void PagedCachesRunMoreRequestsAtOnceInTheSameBudget()
    {
        var rows = Workload("16:200");
        var (contiguous, paged) = (rows[0]!, rows[1]!);
        Assert.IsFalse(contiguous["paged"]!.GetValue<bool>());
        Assert.IsTrue(paged["paged"]!.GetValue<bool>());
        Assert.AreEqual(5, contiguous["slots"]!.GetValue<int>(), "as many 208-position slots as the budget holds");
        Assert.AreEqual(5, contiguous["max_running"]!.GetValue<int>());
        Assert.IsTrue(paged["kv_bytes_allocated"]!.GetValue<long>() <= BudgetBytes, paged.ToJsonString());
        Assert.AreEqual(BudgetBytes / 8192, paged["kv_blocks"]!.GetValue<int>(), "no rings: the whole budget is blocks");
        Assert.IsTrue(paged["max_running"]!.GetValue<int>() > contiguous["max_running"]!.GetValue<int>(), paged.ToJsonString());
        foreach (var r in rows)
        {
            Assert.AreEqual(24 * 8, r!["generated_tokens"]!.GetValue<int>(), "every request generates --new tokens (no stop token)");
            Assert.AreEqual(Enumerable.Range(0, 24).Sum(i => 16 + 184 * i / 23), r["prompt_tokens"]!.GetValue<int>(), "lengths spread evenly from 16 to 200");
        }
        Assert.AreEqual(1.0, contiguous["max_running_vs_first"]!.GetValue<double>());
        // fp32 on the CPU: a request's greedy tokens do not depend on the batch it decodes in, so paged caches, which
        // run more requests at once, give every request the contiguous model's tokens.
        Assert.AreEqual(24, paged["same_tokens_as_first"]!.GetValue<int>(), paged.ToJsonString());
        CollectionAssert.AreEqual(Digests(contiguous), Digests(paged));
        Assert.AreEqual(24, Digests(paged).Distinct().Count(), "one digest per request, and different prompts give different tokens");
    }

    private static string[] Digests(JsonNode row) => row["token_digests"]!.AsArray().Select(d => d!.GetValue<string>()).ToArray();

    [TestMethod]
    public void ASharedPrefixIsStoredOnce()
    {
        var paged = Workload("80:200", "--shared-prefix", "64")[1]!;
        Assert.IsTrue(paged["max_shared_blocks"]!.GetValue<int>() >= 4, $"64 shared tokens are 4 blocks of 16: {paged.ToJsonString()}");
        Assert.IsTrue(paged["reused_tokens"]!.GetValue<int>() >= 64, paged.ToJsonString());
    }

    [TestMethod]
    public void SwapPreemptionRecomputesNothing()
    {
        // Half the budget and 48 new tokens (3 blocks of growth each): the paged session runs out of blocks and preempts.
        var (code, stdout, err) = InspectCliTests.Run(["workload", Models.Value.Paged, "--requests", "24", "--prompt", "16:200", "--new", "48",
            "--budget-gib", "0.00025", "--prefill-chunk", "32", "--preempt", "swap", "--json"]);
        Assert.AreEqual(0, code, err);
        var root = JsonNode.Parse(stdout)!;
        Assert.AreEqual("swap", root["preemption"]!.GetValue<string>());
        var paged = root["results"]![0]!;
        Assert.IsGreaterThan(0, paged["preemptions"]!.GetValue<int>(), paged.ToJsonString());
        Assert.AreEqual(paged["preemptions"]!.GetValue<int>(), paged["swapped_out"]!.GetValue<int>(), paged.ToJsonString());
        Assert.AreEqual(0, paged["recomputed_tokens"]!.GetValue<int>(), paged.ToJsonString());
        Assert.IsGreaterThan(0L, paged["swapped_bytes"]!.GetValue<long>(), paged.ToJsonString());
        Assert.AreEqual(24 * 48, paged["generated_tokens"]!.GetValue<int>());
        // Swapped requests continue exactly: the same tokens as a run whose pool never runs short.
        var (code2, stdout2, err2) = InspectCliTests.Run(["workload", Models.Value.Paged, "--requests", "24", "--prompt", "16:200", "--new", "48",
            "--budget-gib", "0.01", "--prefill-chunk", "32", "--json"]);
        Assert.AreEqual(0, code2, err2);
        var roomy = JsonNode.Parse(stdout2)!["results"]![0]!;
        Assert.AreEqual(0, roomy["preemptions"]!.GetValue<int>(), roomy.ToJsonString());
        CollectionAssert.AreEqual(Digests(roomy), Digests(paged));
    }

    [TestMethod]
    [DataRow("--prompt", "200:16", "not a length N or a range")]
    [DataRow("--prompt", "0:16", "not a length N or a range")]
    [DataRow("--shared-prefix", "16", "shorter than the shortest prompt (16)")]
    [DataRow("--new", "0", "--new must be >= 1")]
    [DataRow("--preempt", "later", "later")]
    [DataRow("--cuda-graph", "", "--cuda-graph needs --device cuda")]
    public void BadInputIsOneLineAndExitTwo(string option, string value, string message)
    {
        string[] prompt = option == "--prompt" ? [] : ["--prompt", "16:200"];
        string[] flag = value.Length == 0 ? [option] : [option, value];
        var (code, _, err) = InspectCliTests.Run(["workload", Models.Value.Contiguous, .. prompt, .. flag]);
        Assert.AreEqual(2, code, err);
        StringAssert.Contains(err, message);
        Assert.IsFalse(err.Contains("   at ", StringComparison.Ordinal), err);
    }

    [TestMethod]
    public void ABudgetBelowOneSequenceNamesTheSizes()
    {
        var (code, _, err) = InspectCliTests.Run("workload", Models.Value.Contiguous, "--prompt", "16:200", "--budget-gib", "0.00001");
        Assert.AreEqual(2, code, err);
        StringAssert.Contains(err, "more than the budget");
    }
}
