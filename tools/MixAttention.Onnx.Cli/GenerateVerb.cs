using System.CommandLine;
using System.Diagnostics;
using MixAttention.Onnx.Runtime;

namespace MixAttention.Onnx.Cli;

/// <summary><c>mixattn generate MODEL --prompt TEXT [--tokenizer DIR] [--max-new N] [--device cpu|cuda] ...</c></summary>
internal static class GenerateVerb
{
    public static Command Create()
    {
        var model = new Argument<string>("MODEL") { Description = "A converted or unconverted decoder (.onnx)." };
        var prompt = new Option<string>("--prompt", "-p") { Description = "The prompt text.", Required = true };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Folder with tokenizer.json and tokenizer_config.json (default: the model's folder)." };
        var maxNew = new Option<int>("--max-new") { Description = "Tokens to generate at most.", DefaultValueFactory = _ => 64 };
        var maxLength = new Option<int?>("--max-length") { Description = "Longest sequence (global cache capacity); default 2048, or fewer when the model's rotary tables hold fewer positions." };
        var device = new Option<string>("--device") { Description = "cpu or cuda.", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var temperature = new Option<float>("--temperature") { Description = "0 = greedy.", DefaultValueFactory = _ => 0f };
        var topK = new Option<int>("--top-k") { DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { DefaultValueFactory = _ => 1f };
        var penalty = new Option<float>("--repetition-penalty") { DefaultValueFactory = _ => 1f };
        var seed = new Option<int?>("--seed");
        var json = new Option<bool>("--json") { Description = "Print one JSON document (text, token ids, tokens/s, KV memory) instead of streaming text." };
        var cmd = new Command("generate", "Generate text with a model, streaming it, then print tokens/s and KV memory.\n\n" +
            "Example:\n  mixattn generate out/gpt2.onnx --tokenizer graphs/demo --prompt \"Once upon a time\" --max-new 40")
        {
            model, prompt, tokenizer, maxNew, maxLength, device, temperature, topK, topP, penalty, seed, json,
        };
        cmd.SetAction(async (parse, ct) =>
        {
            var path = parse.GetValue(model)!;
            var tokDir = parse.GetValue(tokenizer) ?? Path.GetDirectoryName(Path.GetFullPath(path))!;
            using var tok = OrtExtensionsTokenizer.FromDirectory(tokDir);
            using var m = MixAttentionModel.Open(path, new ModelOptions { Device = parse.GetValue(device) == "cuda" ? ExecutionDevice.Cuda : ExecutionDevice.Cpu });
            var ids = tok.Encode(parse.GetValue(prompt)!);
            if (m.VocabSize > 0 && ids.Any(i => i >= m.VocabSize))
                throw new MixAttentionException($"the tokenizer in {tokDir} produced ids up to {ids.Max()}, beyond the model's vocabulary of {m.VocabSize}.");
            int length = parse.GetValue(maxLength) ?? Math.Min(2048, m.Plan?.MaxPositions ?? int.MaxValue);
            using var session = m.CreateSession(new SessionConfig { MaxLength = length, PrefillChunk = 256 });
            var options = new GenerationOptions
            {
                MaxNewTokens = parse.GetValue(maxNew),
                Temperature = parse.GetValue(temperature),
                TopK = parse.GetValue(topK),
                TopP = parse.GetValue(topP),
                RepetitionPenalty = parse.GetValue(penalty),
                Seed = parse.GetValue(seed),
                StopTokens = tok.StopTokens,
            };
            bool asJson = parse.GetValue(json);
            if (!asJson) Console.Write(parse.GetValue(prompt));
            var generated = new List<long>();
            int emitted = 0;
            var watch = Stopwatch.StartNew();
            SessionKvMemory? memory = null;
            await foreach (var t in new ContinuousBatchingGenerator(session).GenerateAsync(ids, options, ct))
            {
                generated.Add(t);
                var piece = tok.DecodeIncrement(generated, ref emitted);
                if (!asJson) Console.Write(piece);
                memory = session.Memory();
            }
            watch.Stop();
            if (asJson)
            {
                Console.WriteLine(new System.Text.Json.Nodes.JsonObject
                {
                    ["prompt"] = parse.GetValue(prompt), ["text"] = tok.Decode(generated),
                    ["tokens"] = new System.Text.Json.Nodes.JsonArray(generated.Select(t => (System.Text.Json.Nodes.JsonNode)System.Text.Json.Nodes.JsonValue.Create(t)).ToArray()),
                    ["seconds"] = watch.Elapsed.TotalSeconds, ["tokens_per_second"] = generated.Count / watch.Elapsed.TotalSeconds,
                    ["kv_bytes_allocated"] = memory?.AllocatedBytes, ["kv_bytes_per_sequence"] = memory?.BytesPerSequence,
                    ["kv_bytes_per_sequence_unconverted"] = memory?.UnconvertedBytesPerSequence,
                }.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
                return ExitCodes.Ok;
            }
            Console.WriteLine();
            Console.Error.WriteLine($"{generated.Count} tokens in {watch.Elapsed.TotalSeconds:0.00} s ({generated.Count / watch.Elapsed.TotalSeconds:0.0} tokens/s, prefill of {ids.Length} included)");
            if (memory is not null)
                Console.Error.WriteLine($"KV memory: {Cli.Bytes(memory.AllocatedBytes)} allocated, {Cli.Bytes(memory.BytesPerSequence)} per sequence of {memory.MaxLength} tokens (unconverted: {Cli.Bytes(memory.UnconvertedBytesPerSequence)})");
            return ExitCodes.Ok;
        });
        return cmd;
    }
}
