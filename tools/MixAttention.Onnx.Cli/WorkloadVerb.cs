using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using MixAttention.Onnx.Runtime;

namespace MixAttention.Onnx.Cli;

/// <summary>
/// <c>mixattn workload MODEL... --requests N --prompt MIN:MAX --new N --budget-gib G</c>: a serving workload through
/// continuous batching, each model in a session sized to the same KV budget. Contiguous caches reserve every slot at the
/// longest request's length; paged caches (<c>convert --paged</c>) take blocks by actual length, so more requests run at
/// once. Prints, per model, how many ran together and the generated tokens/s, with ratios to the first model.
/// </summary>
internal static class WorkloadVerb
{
    public static Command Create()
    {
        var models = new Argument<string[]>("MODELS") { Description = "Decoders to run the same workload on (.onnx); the first is the baseline of the ratios.", Arity = ArgumentArity.OneOrMore };
        var requests = new Option<int>("--requests") { Description = "Requests, all arriving at once.", DefaultValueFactory = _ => 256 };
        var prompt = new Option<string>("--prompt") { Description = "Prompt lengths MIN:MAX, spread evenly over the requests in a seeded order (or one length N).", DefaultValueFactory = _ => "512:32768" };
        var newTokens = new Option<int>("--new") { Description = "Tokens each request generates (greedy, no stop token).", DefaultValueFactory = _ => 256 };
        var sharedPrefix = new Option<int>("--shared-prefix") { Description = "Leading prompt tokens every request has in common (a system prompt); paged sessions store their blocks once.", DefaultValueFactory = _ => 0 };
        var budget = new Option<double>("--budget-gib") { Description = "KV memory each model's session may take.", DefaultValueFactory = _ => 64 };
        var maxBatch = new Option<int?>("--max-batch") { Description = "Most batch slots (default: --requests); fewer when the budget allows fewer." };
        var chunk = new Option<int>("--prefill-chunk") { Description = "Prefill call length.", DefaultValueFactory = _ => 256 };
        var device = new Option<string>("--device") { Description = "cpu or cuda.", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var preempt = new Option<string>("--preempt") { Description = "Paged sessions short of blocks preempt a request: recompute (prefill its tokens again on resume) or swap (its caches to host memory and back).", DefaultValueFactory = _ => "recompute" };
        preempt.AcceptOnlyFromAmong("recompute", "swap");
        var cudaGraph = new Option<bool>("--cuda-graph") { Description = "Decode steps as CUDA graph replays (--device cuda, ops-backend conversions): every step then runs all slots." };
        var seed = new Option<int>("--seed") { Description = "Seed of the prompt tokens and the order of the lengths.", DefaultValueFactory = _ => 1 };
        var json = new Option<bool>("--json") { Description = "Print the results as JSON." };
        var cmd = new Command("workload", "Run a serving workload (many requests of mixed lengths arriving together) through continuous batching on each model, " +
            "every session sized to the same KV budget, and print the requests that ran at once and the generated tokens/s.\n\n" +
            "Example:\n  mixattn workload out/cai/model.onnx out/cai-paged/model.onnx --requests 64 --prompt 128:2048 --new 32 --budget-gib 1")
        {
            models, requests, prompt, newTokens, sharedPrefix, budget, maxBatch, chunk, device, cudaGraph, preempt, seed, json,
        };
        cmd.SetAction(parse =>
        {
            var w = new Workload(
                parse.GetValue(requests), ParseLengths(parse.GetValue(prompt)!), parse.GetValue(newTokens), parse.GetValue(sharedPrefix),
                (long)(parse.GetValue(budget) * (1L << 30)), parse.GetValue(maxBatch), parse.GetValue(chunk), parse.GetValue(seed),
                parse.GetValue(preempt) == "swap" ? PreemptionMode.Swap : PreemptionMode.Recompute);
            w.Validate();
            var options = new ModelOptions
            {
                Device = parse.GetValue(device) == "cuda" ? ExecutionDevice.Cuda : ExecutionDevice.Cpu,
                CudaGraphDecode = parse.GetValue(cudaGraph),
            };
            if (options.CudaGraphDecode && options.Device != ExecutionDevice.Cuda) throw new MixAttentionException("--cuda-graph needs --device cuda.");
            var rows = new List<JsonObject>();
            IReadOnlyList<GenerationResult>? first = null;
            foreach (var path in parse.GetValue(models)!)
            {
                Console.Error.WriteLine($"== {path}");
                var (row, results) = RunOne(path, options, w);
                // Greedy tokens against the first model's: paged and contiguous caches of one layout give the same
                // tokens up to the rounding of a different kernel split (CUDA fp16), and swapped requests the same.
                first ??= results;
                row["same_tokens_as_first"] = results.Zip(first).Count(p => p.First.Tokens.SequenceEqual(p.Second.Tokens));
                // One digest per request (FNV-1a over its tokens), in request order: runs compared across invocations.
                row["token_digests"] = new JsonArray(results.Select(r => (JsonNode)Digest(r.Tokens)).ToArray());
                rows.Add(row);
            }
            Print(rows, w, parse.GetValue(json));
            return ExitCodes.Ok;
        });
        return cmd;
    }

    private sealed record Workload(int Requests, (int Min, int Max) Prompt, int NewTokens, int SharedPrefix, long BudgetBytes, int? MaxBatch, int PrefillChunk, int Seed,
        PreemptionMode Preemption)
    {
        public int MaxLength => Prompt.Max + NewTokens;

        public void Validate()
        {
            if (Requests < 1) throw new MixAttentionException($"--requests must be >= 1, got {Requests}.");
            if (NewTokens < 1) throw new MixAttentionException($"--new must be >= 1, got {NewTokens}.");
            if (PrefillChunk < 1) throw new MixAttentionException($"--prefill-chunk must be >= 1, got {PrefillChunk}.");
            if (BudgetBytes < 1) throw new MixAttentionException("--budget-gib must be > 0.");
            if (MaxBatch is < 1) throw new MixAttentionException($"--max-batch must be >= 1, got {MaxBatch}.");
            if (SharedPrefix < 0 || SharedPrefix >= Prompt.Min)
                throw new MixAttentionException($"--shared-prefix {SharedPrefix} must be >= 0 and shorter than the shortest prompt ({Prompt.Min}): every request needs a token of its own.");
        }

        /// <summary>Prompt lengths spread evenly from Min to Max, in a seeded order; token ids below the vocabulary (at most 1000), the shared prefix first.</summary>
        public GenerationRequest[] Build(int vocab)
        {
            var rng = new Random(Seed);
            int v = Math.Max(2, Math.Min(vocab, 1000));
            var lengths = Enumerable.Range(0, Requests)
                .Select(i => Requests == 1 ? Prompt.Max : Prompt.Min + (int)((long)(Prompt.Max - Prompt.Min) * i / (Requests - 1)))
                .ToArray();
            rng.Shuffle(lengths);
            var prefix = Enumerable.Range(0, SharedPrefix).Select(_ => (long)rng.Next(v)).ToArray();
            var options = new GenerationOptions { MaxNewTokens = NewTokens };
            return lengths.Select(n => new GenerationRequest(prefix.Concat(Enumerable.Range(0, n - SharedPrefix).Select(_ => (long)rng.Next(v))).ToArray(), options)).ToArray();
        }
    }

    private static string Digest(IReadOnlyList<long> tokens)
    {
        ulong h = 14695981039346656037UL;
        foreach (long t in tokens)
            for (int i = 0; i < 8; i++) h = (h ^ (byte)(t >> (8 * i))) * 1099511628211UL;
        return h.ToString("x16", CultureInfo.InvariantCulture);
    }

    private static (int, int) ParseLengths(string text)
    {
        var parts = text.Split(':');
        bool ok = parts.Length is 1 or 2;
        var values = new int[parts.Length];
        for (int i = 0; ok && i < parts.Length; i++) ok = int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out values[i]) && values[i] >= 1;
        if (!ok || values[0] > values[^1])
            throw new MixAttentionException($"--prompt '{text}' is not a length N or a range MIN:MAX of positive integers with MIN <= MAX.");
        return (values[0], values[^1]);
    }

    private static (JsonObject Row, IReadOnlyList<GenerationResult> Results) RunOne(string path, ModelOptions options, Workload w)
    {
        using var model = MixAttentionModel.Open(path, options);
        var (config, paged) = Size(model, w);
        var requests = w.Build(model.VocabSize);
        using var session = model.CreateSession(config);
        var kv = session is InPlaceCacheSession ip ? ip.Caches : null;
        Console.Error.WriteLine(paged
            ? $"   paged: {config.MaxBatch} slots, {config.KvBlocks} blocks of {kv!.BlockSize} positions, {Cli.Bytes(kv.AllocatedBytes)} of KV"
            : $"   contiguous: {config.MaxBatch} slots of {config.MaxLength} positions, {Cli.Bytes(session.Memory().AllocatedBytes)} of KV");
        var generator = new ContinuousBatchingGenerator(session) { Preemption = w.Preemption };
        int finished = 0, reported = 0;
        var watch = Stopwatch.StartNew();
        var results = generator.Run(requests, t =>
        {
            if (t.Finish is null) return;
            // Progress on stderr, one line per tenth of the requests.
            if (++finished * 10 / w.Requests > reported)
            {
                reported = finished * 10 / w.Requests;
                Console.Error.WriteLine($"   [{watch.Elapsed.TotalSeconds,7:0.0} s] {finished}/{w.Requests} requests done");
            }
        });
        watch.Stop();
        var stats = generator.LastStats!;
        return (new JsonObject
        {
            ["model"] = path,
            ["paged"] = paged,
            ["slots"] = config.MaxBatch,
            ["kv_blocks"] = config.KvBlocks,
            ["block_size"] = kv?.BlockSize,
            ["kv_bytes_allocated"] = session.Memory().AllocatedBytes,
            ["max_running"] = stats.MaxRunning,
            ["requests"] = w.Requests,
            ["prompt_tokens"] = stats.PromptTokens,
            ["generated_tokens"] = stats.GeneratedTokens,
            ["seconds"] = watch.Elapsed.TotalSeconds,
            ["generated_tokens_per_second"] = stats.GeneratedTokens / watch.Elapsed.TotalSeconds,
            ["prefill_seconds"] = stats.PrefillTime.TotalSeconds,
            ["decode_seconds"] = stats.DecodeTime.TotalSeconds,
            ["decode_steps"] = stats.DecodeSteps,
            ["preemptions"] = stats.Preemptions,
            ["recomputed_tokens"] = stats.RecomputedTokens,
            ["swapped_out"] = stats.SwappedOut,
            ["swapped_bytes"] = stats.SwappedBytes,
            ["reused_tokens"] = stats.ReusedTokens,
            ["max_used_blocks"] = stats.MaxUsedBlocks,
            ["max_shared_blocks"] = stats.MaxSharedBlocks,
        }, results.OrderBy(r => r.Request).ToList());
    }

    /// <summary>
    /// The session for the budget: contiguous caches get as many slots of MaxLength as fit. Paged caches get as many slots
    /// (each owns its sliding rings) as fit with the blocks of a request of the workload's mean length each, and the rest of
    /// the budget as blocks: a slot without blocks to grow into is memory no request can use. At least the blocks of one
    /// longest request.
    /// </summary>
    private static (SessionConfig Config, bool Paged) Size(MixAttentionModel model, Workload w)
    {
        var probeConfig = new SessionConfig { MaxBatch = 1, MaxLength = w.MaxLength, PrefillChunk = w.PrefillChunk, KvBlocks = 1 };
        long perSlot, perBlock;
        int blocksForLongest, blocksForMean, scratch;
        bool paged;
        using (var probe = model.CreateSession(probeConfig))
        {
            var kv = (probe as InPlaceCacheSession)?.Caches;
            paged = kv?.BlockSize is not null;
            perSlot = paged ? kv!.Caches.Where(c => !c.Entry.IsPaged).Sum(c => 2 * c.SlotBytes) : probe.Memory().BytesPerSequence;
            perBlock = kv?.BytesPerBlock ?? 0;
            blocksForLongest = kv?.BlocksFor(w.MaxLength) ?? 0;
            blocksForMean = kv?.BlocksFor((w.Prompt.Min + w.Prompt.Max) / 2 + w.NewTokens) ?? 0;
            scratch = kv?.ScratchBlocks ?? 0;
        }
        int want = w.MaxBatch ?? w.Requests;
        if (!paged)
        {
            long fit = perSlot == 0 ? want : w.BudgetBytes / perSlot;
            if (fit < 1)
                throw new MixAttentionException($"one sequence of {w.MaxLength} positions takes {Cli.Bytes(perSlot)} of KV, more than the budget of {Cli.Bytes(w.BudgetBytes)}.");
            return (new SessionConfig { MaxBatch = (int)Math.Min(want, fit), MaxLength = w.MaxLength, PrefillChunk = w.PrefillChunk, MaxCacheBytes = w.BudgetBytes }, false);
        }
        long minimum = (long)(blocksForLongest + scratch) * perBlock;
        // No rings (every owner paged): a slot costs nothing, so the blocks alone decide how many run.
        long balanced = perSlot == 0 ? want : w.BudgetBytes / Math.Max(1, perSlot + blocksForMean * perBlock);
        int slots = (int)Math.Min(Math.Min(want, balanced), Math.Max(0, (w.BudgetBytes - minimum) / Math.Max(1, perSlot)));
        if (slots < 1)
            throw new MixAttentionException($"one sequence of {w.MaxLength} positions needs {blocksForLongest} blocks ({Cli.Bytes(minimum)}) and {Cli.Bytes(perSlot)} of rings, more than the budget of {Cli.Bytes(w.BudgetBytes)}.");
        long blocks = (w.BudgetBytes - slots * perSlot) / perBlock - scratch; // a scratch block is memory too
        blocks = Math.Min(blocks, (long)slots * blocksForLongest); // more blocks than every slot at full length would never be used
        return (new SessionConfig { MaxBatch = slots, MaxLength = w.MaxLength, PrefillChunk = w.PrefillChunk, KvBlocks = (int)Math.Min(int.MaxValue, blocks), MaxCacheBytes = w.BudgetBytes }, true);
    }

    private static void Print(List<JsonObject> rows, Workload w, bool asJson)
    {
        double baseRate = rows[0]["generated_tokens_per_second"]!.GetValue<double>();
        int baseRunning = rows[0]["max_running"]!.GetValue<int>();
        foreach (var r in rows)
        {
            r["tokens_per_second_vs_first"] = baseRate > 0 ? r["generated_tokens_per_second"]!.GetValue<double>() / baseRate : null;
            r["max_running_vs_first"] = baseRunning > 0 ? (double)r["max_running"]!.GetValue<int>() / baseRunning : null;
        }
        if (asJson)
        {
            Console.WriteLine(new JsonObject
            {
                ["requests"] = w.Requests, ["prompt_min"] = w.Prompt.Min, ["prompt_max"] = w.Prompt.Max, ["new_tokens"] = w.NewTokens,
                ["shared_prefix"] = w.SharedPrefix, ["budget_bytes"] = w.BudgetBytes, ["seed"] = w.Seed,
                ["preemption"] = w.Preemption == PreemptionMode.Swap ? "swap" : "recompute",
                ["results"] = new JsonArray(rows.Select(r => (JsonNode)r).ToArray()),
            }.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
            return;
        }
        Console.WriteLine($"{w.Requests} requests, prompts {w.Prompt.Min}-{w.Prompt.Max} tokens (shared prefix {w.SharedPrefix}), {w.NewTokens} new tokens each, KV budget {Cli.Bytes(w.BudgetBytes)}");
        Console.WriteLine($"{"model",-40} {"caches",-10} {"slots",6} {"ran at once",11} {"vs first",8} {"gen tok/s",10} {"vs first",8} {"seconds",8} {"preempt",7} {"reused",8} {"shared blk",10} {"same tokens",11}");
        foreach (var r in rows)
        {
            string name = r["model"]!.GetValue<string>();
            if (name.Length > 40) name = "…" + name[^39..];
            Console.WriteLine($"{name,-40} {(r["paged"]!.GetValue<bool>() ? "paged" : "contiguous"),-10} {r["slots"],6} {r["max_running"],11} {r["max_running_vs_first"]!.GetValue<double>(),7:0.00}x " +
                $"{r["generated_tokens_per_second"]!.GetValue<double>(),10:0.0} {r["tokens_per_second_vs_first"]!.GetValue<double>(),7:0.00}x {r["seconds"]!.GetValue<double>(),8:0.0} " +
                $"{r["preemptions"],7} {r["reused_tokens"],8} {r["max_shared_blocks"],10} {r["same_tokens_as_first"],11}");
        }
    }
}
