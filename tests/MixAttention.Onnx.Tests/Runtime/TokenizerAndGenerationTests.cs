using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Runtime;

[TestClass]
public sealed class TokenizerAndGenerationTests
{
    private static string DemoTokenizer => Path.Combine(TestPaths.Graphs, "demo");

    /// <summary>The full GPT-2 tokenizer (graphs/gpt2-tokenizer, copied unchanged from onnxruntime-genai's tiny-random-gpt2-fp32).</summary>
    private static string FullGpt2Tokenizer => PackedArchive.Decompress(
        Path.Combine(TestPaths.Graphs, "gpt2-tokenizer", "tokenizer.json.br"),
        staging => File.Copy(Path.Combine(TestPaths.Graphs, "gpt2-tokenizer", "tokenizer_config.json"), Path.Combine(staging, "tokenizer_config.json")));

    [TestMethod]
    public void TrimmedTokenizerRoundTripsWithinTheModelVocabulary()
    {
        using var tok = OrtExtensionsTokenizer.FromDirectory(DemoTokenizer);
        const string text = "The quick brown fox jumps over the lazy dog. Héllo wörld!\nSecond line.";
        var ids = tok.Encode(text);
        Assert.IsNotEmpty(ids);
        Assert.IsTrue(ids.All(i => i is >= 0 and < 1000), string.Join(",", ids));
        Assert.AreEqual(text, tok.Decode(ids));
    }

    [TestMethod]
    public void FullGpt2TokenizerMatchesKnownIds()
    {
        using var tok = OrtExtensionsTokenizer.FromDirectory(FullGpt2Tokenizer);
        // GPT-2 BPE: "Hello world" = [15496, 995].
        CollectionAssert.AreEqual(new long[] { 15496, 995 }, tok.Encode("Hello world"));
        Assert.AreEqual("Hello world", tok.Decode(new long[] { 15496, 995 }));
        CollectionAssert.Contains(tok.StopTokens.ToArray(), 50256L);
    }

    /// <summary>The GPT-2 sample model generates identical text through the original and a native-layout conversion.</summary>
    [TestMethod]
    public void Gpt2SampleGeneratesIdenticalTextOriginalAndConverted()
    {
        using var tok = OrtExtensionsTokenizer.FromDirectory(DemoTokenizer);
        var prompt = tok.Encode("Once upon a time, in a land far away,");
        var options = new GenerationOptions { MaxNewTokens = 40 };
        string Generate(string path, out SessionKvMemory memory, out bool inPlace)
        {
            using var model = RuntimeFixtures.Open(path);
            inPlace = model.IsInPlace;
            using var session = model.CreateSession(new SessionConfig { MaxLength = 128, PrefillChunk = 8 });
            var result = new ContinuousBatchingGenerator(session).Run(new[] { new GenerationRequest(prompt, options) })[0];
            memory = session.Memory();
            Assert.HasCount(40, result.Tokens);
            return tok.Decode(result.Tokens);
        }
        var original = Generate(TestPaths.Fixture("gpt2-ortattention"), out var m0, out var p0);
        var converted = Generate(RuntimeFixtures.Convert("gpt2-ortattention"), out var m1, out var p1);
        Assert.IsFalse(p0);
        Assert.IsTrue(p1);
        Assert.AreEqual(original, converted);
        Assert.AreEqual(m0.BytesPerSequence, m1.UnconvertedBytesPerSequence);
    }

    [TestMethod]
    public async Task StreamingYieldsTheSameTokensAsRun()
    {
        using var model = RuntimeFixtures.Open(RuntimeFixtures.Convert("mistral-torchscript"));
        using var session = model.CreateSession(new SessionConfig { MaxLength = 64, PrefillChunk = 8 });
        var prompt = RuntimeFixtures.RandomTokens(3, 10);
        var options = new GenerationOptions { MaxNewTokens = 20, Temperature = 0.8f, TopK = 50, TopP = 0.9f, RepetitionPenalty = 1.2f, Seed = 42 };
        var generator = new ContinuousBatchingGenerator(session);
        var streamed = new List<long>();
        await foreach (var t in generator.GenerateAsync(prompt, options)) streamed.Add(t);
        var batch = generator.Run(new[] { new GenerationRequest(prompt, options) })[0];
        CollectionAssert.AreEqual(batch.Tokens.ToArray(), streamed);
        Assert.AreEqual(0, session.Sequences.Count);
    }

    [TestMethod]
    public void StopTokensAndMaxLengthEndGeneration()
    {
        using var model = RuntimeFixtures.Open(RuntimeFixtures.Convert("gemma3-torchscript"));
        using var session = model.CreateSession(new SessionConfig { MaxBatch = 2, MaxLength = 24, PrefillChunk = 8 });
        var prompt = RuntimeFixtures.RandomTokens(9, 10);
        var greedy = new ContinuousBatchingGenerator(session).Run(new[] { new GenerationRequest(prompt, new GenerationOptions { MaxNewTokens = 8 }) })[0];
        var stopAt = greedy.Tokens[3];
        int firstStop = greedy.Tokens.ToList().IndexOf(stopAt);
        var streamed = new List<GeneratedToken>();
        var results = new ContinuousBatchingGenerator(session).Run(new[]
        {
            new GenerationRequest(prompt, new GenerationOptions { MaxNewTokens = 8, StopTokens = new[] { stopAt } }),
            new GenerationRequest(prompt, new GenerationOptions { MaxNewTokens = 100 }),
        }, streamed.Add);
        Assert.AreEqual(FinishReason.Stop, results[0].Finish);
        Assert.HasCount(firstStop + 1, results[0].Tokens);
        Assert.AreEqual(FinishReason.Length, results[1].Finish);
        Assert.HasCount(24 - 10 + 1, results[1].Tokens, "the last token is produced by the call that fills the cache");
        Assert.AreEqual(results.Sum(r => r.Tokens.Count), streamed.Count);
    }

    [TestMethod]
    public void SamplerHonoursTopKAndGreedy()
    {
        var logits = new float[] { 0.1f, 3f, 2.9f, -1f, 0.5f };
        Assert.AreEqual(1L, new Sampler(new GenerationOptions()).Next((float[])logits.Clone(), Array.Empty<long>()));
        var topK = new Sampler(new GenerationOptions { Temperature = 5f, TopK = 2, Seed = 1 });
        for (int i = 0; i < 200; i++) Assert.IsTrue(topK.Next((float[])logits.Clone(), Array.Empty<long>()) is 1 or 2);
        var topP = new Sampler(new GenerationOptions { Temperature = 1f, TopP = 0.01f, Seed = 1 });
        for (int i = 0; i < 50; i++) Assert.AreEqual(1L, topP.Next((float[])logits.Clone(), Array.Empty<long>()));
        // A strong repetition penalty moves greedy off a repeated token.
        Assert.AreEqual(2L, new Sampler(new GenerationOptions { RepetitionPenalty = 2f }).Next((float[])logits.Clone(), new long[] { 1 }));
    }
}
