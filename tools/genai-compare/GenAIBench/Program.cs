// genai-bench MODEL_DIR --context N --batch N [--steps N] [--warmup N]
// Decode tokens/s of onnxruntime-genai's Generator at a given context and batch, for tools/genai-compare/run.py.
// The prompt (random token ids, seeded) is appended in one call (genai allows a single AppendTokens when batch > 1),
// then `warmup` untimed and `steps` timed GenerateNextToken calls (greedy). Prints one JSON object.
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.OnnxRuntimeGenAI;

int context = 4096, batch = 1, steps = 32, warmup = 3;
string? dir = null;
for (int i = 0; i < args.Length; i++)
{
    int Next() => i + 1 < args.Length && int.TryParse(args[++i], NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v > 0
        ? v : throw new ArgumentException($"{args[i - 1]} needs a positive integer");
    switch (args[i])
    {
        case "--context": context = Next(); break;
        case "--batch": batch = Next(); break;
        case "--steps": steps = Next(); break;
        case "--warmup": warmup = Next(); break;
        default:
            if (dir is null && !args[i].StartsWith("--")) dir = args[i];
            else { Console.Error.WriteLine($"genai-bench: unknown argument '{args[i]}'"); return 2; }
            break;
    }
}
if (dir is null || !File.Exists(Path.Combine(dir, "genai_config.json")))
{
    Console.Error.WriteLine("usage: genai-bench MODEL_DIR (with genai_config.json) --context N --batch N [--steps N] [--warmup N]");
    return 2;
}

var decoder = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "genai_config.json")))!["model"]!["decoder"]!;
int layers = (int)decoder["num_hidden_layers"]!, kvHeads = (int)decoder["num_key_value_heads"]!, headSize = (int)decoder["head_size"]!;
int vocab = (int)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "genai_config.json")))!["model"]!["vocab_size"]!;
int maxLength = context + warmup + steps;

using var config = new Config(dir);
config.ClearProviders();   // CPU
using var model = new Model(config);
using var parameters = new GeneratorParams(model);
parameters.SetSearchOption("max_length", maxLength);
parameters.SetSearchOption("batch_size", batch);
parameters.SetSearchOption("do_sample", false);
using var generator = new Generator(model, parameters);

var rng = new Random(1234);
var prompt = new int[batch * context];
for (int i = 0; i < prompt.Length; i++) prompt[i] = rng.Next(1, vocab);
var clock = Stopwatch.StartNew();
generator.AppendTokens(prompt);
double prefillS = clock.Elapsed.TotalSeconds;
for (int i = 0; i < warmup; i++) generator.GenerateNextToken();
clock.Restart();
for (int i = 0; i < steps; i++) generator.GenerateNextToken();
double decodeS = clock.Elapsed.TotalSeconds;

// The KV buffers genai allocated: with past_present_share_buffer each layer's present.N.key/value is one
// [batch, kv_heads, max_length, head_size] buffer; read its shape back rather than trusting the config.
using var present = generator.GetOutput("present.0.key");
long[] shape = present.Shape();
long kvBytes = 2L * layers * shape.Aggregate(1L, (a, b) => a * b) * sizeof(float);
long expected = 2L * layers * batch * kvHeads * (long)maxLength * headSize * sizeof(float);

Console.WriteLine(new JsonObject
{
    ["system"] = "genai", ["model"] = dir, ["context"] = context, ["batch"] = batch, ["steps"] = steps,
    ["decode_ms_per_step"] = decodeS * 1000 / steps,
    ["tokens_per_second"] = batch * steps / decodeS,
    ["prefill_tokens_per_second"] = batch * (double)context / prefillS,
    ["kv_bytes_allocated"] = kvBytes,
    ["kv_bytes_per_sequence"] = kvBytes / batch,
    ["present_shape"] = string.Join('x', shape),
    ["kv_bytes_share_buffer_expected"] = expected,
    ["peak_rss_bytes"] = ProcStatusBytes("VmHWM"),
    ["genai_token_count"] = (long)generator.TokenCount(),
}.ToJsonString(new JsonSerializerOptions { WriteIndented = false }));
return 0;

static long ProcStatusBytes(string key)
{
    foreach (var line in File.ReadLines("/proc/self/status"))
        if (line.StartsWith(key + ":", StringComparison.Ordinal))
            return long.Parse(line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;   // "VmHWM:\t1234 kB"
    return -1;
}
