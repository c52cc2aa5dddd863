// MixAttention.Onnx quick start: convert a model, open it, add sequences, stream tokens, read KV memory.
// dotnet run -- MODEL.onnx [OUT_DIR] [--tokenizer DIR]   (samples/README.md; tools/package-smoke.sh runs it)
using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Runtime;

var source = args.Length > 0 ? args[0] : "graphs/mistral-torchscript/model.onnx";
var outDir = args.Length > 1 && !args[1].StartsWith("--") ? args[1] : Path.Combine(Path.GetTempPath(), "mixattn-quickstart");
var tokDir = Array.IndexOf(args, "--tokenizer") is var t and >= 0 ? args[t + 1] : null;

// 1. Convert: "native" keeps the model's own windows (exact); "cai", "gemma3" or "0_0s_1s" share and slide caches.
var converted = Path.Combine(outDir, "model.onnx");
var report = Converter.Convert(source, converted, new ConversionOptions { Layout = "native", Force = true });
Console.WriteLine($"converted: {report.Layout.Count} layers, {report.Plan.Caches.Count} caches -> {converted}");

// 2. Open it (CPU; ExecutionDevice.Cuda on a GPU) and make a session with preallocated caches for 2 sequences.
using var model = MixAttentionModel.Open(converted, new ModelOptions { Device = ExecutionDevice.Cpu });
using var session = model.CreateSession(new SessionConfig { MaxBatch = 2, MaxLength = 256, PrefillChunk = 16 });

// 3. Two sequences: prefill each prompt, then decode both together, one batched call per step (greedy).
using var tokenizer = tokDir is null ? null : OrtExtensionsTokenizer.FromDirectory(tokDir);
long[] prompt = tokenizer?.Encode("Once upon a time") ?? [1, 15, 27, 3, 42];
int a = session.AddSequence(), b = session.AddSequence();
long[] next = [ArgMax(session.Prefill(a, prompt)), ArgMax(session.Prefill(b, prompt[..^1]))];
for (int step = 0; step < 8; step++)
{
    var logits = session.Decode([a, b], next);
    Console.WriteLine($"step {step}: tokens {next[0]}, {next[1]}");
    next = [ArgMax(logits[0]), ArgMax(logits[1])];
}

// 4. Or stream one prompt's tokens with the generator (continuous batching: ContinuousBatchingGenerator.Run).
session.Reset();
var options = new GenerationOptions { MaxNewTokens = 8, StopTokens = tokenizer?.StopTokens ?? [] };
await foreach (var token in new ContinuousBatchingGenerator(session).GenerateAsync(prompt, options))
    Console.Write(tokenizer is null ? $"{token} " : tokenizer.Decode([token]));
Console.WriteLine();

// 5. KV memory: what is allocated, per sequence, and what the unconverted model would need.
var mem = session.Memory();
Console.WriteLine($"KV memory: {mem.AllocatedBytes} B allocated, {mem.BytesPerSequence} B per sequence of {mem.MaxLength} tokens " +
                  $"(unconverted: {mem.UnconvertedBytesPerSequence} B, {mem.Saving:0.0}x less)");

static long ArgMax(ReadOnlySpan<float> v) { int best = 0; for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i; return best; }
