using MixAttention.Onnx.Plan;
using System.Diagnostics;
using System.Text.Json.Nodes;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using MixAttention.Onnx.Lowering;
using MixAttention.Onnx.Onnx.Proto;
using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Tests.Cli;
using MixAttention.Onnx.Tests.Runtime;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Reliability;

/// <summary>
/// Runtime fuzzing (issue 22): the cache plan JSON and the cache axes of converted models are mutated and each
/// result is opened, given a session under a memory cap, prefilled and decoded, as bench and verify do. Every case
/// must end in success, a <see cref="MixAttentionException"/> (the CLI's exit 2) or ONNX Runtime refusing to run the
/// model (exit 2 too, ExitCodes.cs) — never another exception (exit 3), a crash or a hang. In process: each graph variant's
/// ORT session is made once and shared by the plan mutations run against it. MIXATTN_FUZZ_ITERATIONS scales it.
/// </summary>
[TestClass]
public sealed class RuntimeFuzzTests
{
    private static int Iterations(int ci) =>
        int.TryParse(Environment.GetEnvironmentVariable("MIXATTN_FUZZ_ITERATIONS"), out var n) && n > 0 ? n : ci;

    private static readonly (string Fixture, string Layout, int? Window)[] Bases =
    {
        ("llama-gqa", "native", null),      // global caches
        ("gemma3-torchscript", "native", null), // rings and globals
        ("llama-gqa", "0_1s", 8),           // a ring with a reader
    };

    private static readonly JsonNode?[] Values =
    {
        -1, 0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 255, 4096, 4097, 65536, 10_000_000, int.MaxValue, int.MinValue, -2147483647,
        1e20, 1.5, -0.0, "", "x", "fp16", "bf16", "fp32", "int8", "window", "max_length", "growing", "global", "sliding",
        "input_ids", "logits", "past_lengths", null, true, false, new JsonArray(), new JsonObject(), new JsonArray(0, 1), new JsonArray(-1),
    };

    private static JsonNode? Pick(Random rng, IReadOnlyList<string> names) =>
        rng.Next(4) == 0 ? names[rng.Next(names.Count)] : Values[rng.Next(Values.Length)]?.DeepClone();

    /// <summary>Every node of a JSON tree with its parent (object key or array index).</summary>
    private static List<(JsonNode Parent, string? Key, int Index)> Slots(JsonNode root)
    {
        var slots = new List<(JsonNode, string?, int)>();
        void Walk(JsonNode node)
        {
            if (node is JsonObject o)
                foreach (var (k, v) in o.ToList()) { slots.Add((o, k, -1)); if (v is not null) Walk(v); }
            else if (node is JsonArray a)
                for (int i = 0; i < a.Count; i++) { slots.Add((a, null, i)); if (a[i] is { } v) Walk(v); }
        }
        Walk(root);
        return slots;
    }

    /// <summary>Plausible lies: windows, capacity rules and readers changed to values a real plan could hold.</summary>
    internal static string SoftMutatePlan(string json, Random rng)
    {
        var root = JsonNode.Parse(json)!.AsObject();
        var caches = root["caches"]!.AsArray();
        var windows = root["windows"]!.AsArray();
        int[] sizes = { 0, 1, 2, 3, 4, 8, 15, 16, 17, 64, 1000, 10_000_000 };
        int count = 1 + rng.Next(2);
        for (int m = 0; m < count; m++)
        {
            var c = caches[rng.Next(caches.Count)]!.AsObject();
            switch (rng.Next(5))
            {
                case 0: c["window"] = sizes[rng.Next(sizes.Length)]; break;
                case 1: c["capacity"] = rng.Next(2) == 0 ? "window" : "max_length"; break;
                case 2: windows[rng.Next(windows.Count)] = sizes[rng.Next(sizes.Length)]; break;
                case 3: c["readers"] = new JsonArray(); break;
                case 4: c["kv_num_heads"] = c["kv_num_heads"]!.GetValue<int>() + (rng.Next(2) == 0 ? 1 : -1); break;
            }
        }
        return root.ToJsonString();
    }

    internal static string MutatePlan(string json, Random rng, IReadOnlyList<string> names)
    {
        var root = JsonNode.Parse(json)!;
        int count = 1 + rng.Next(3);
        for (int m = 0; m < count; m++)
        {
            var slots = Slots(root);
            var (parent, key, index) = slots[rng.Next(slots.Count)];
            switch (rng.Next(6))
            {
                case 0 when key is not null: ((JsonObject)parent).Remove(key); break;
                case 1 when parent is JsonArray arr && arr.Count > 0: arr.Add(arr[rng.Next(arr.Count)]?.DeepClone()); break;
                case 2 when parent is JsonArray arr2 && arr2.Count > 0: arr2.RemoveAt(rng.Next(arr2.Count)); break;
                default:
                    if (key is not null) ((JsonObject)parent)[key] = Pick(rng, names);
                    else ((JsonArray)parent)[index] = Pick(rng, names);
                    break;
            }
        }
        return root.ToJsonString();
    }

    /// <summary>A graph variant: the cache inputs/outputs' axes, element types or names changed.</summary>
    private static void MutateGraph(GraphProto g, Random rng, CachePlan plan)
    {
        int count = 1 + rng.Next(2);
        for (int m = 0; m < count; m++)
        {
            var cache = plan.Caches[rng.Next(plan.Caches.Count)];
            var names = new[] { cache.PastKey, cache.PastValue, cache.PresentKey, cache.PresentValue };
            var name = names[rng.Next(names.Length)];
            var info = g.Input.Concat(g.Output).First(v => v.Name == name);
            info.Type.TensorType.Shape ??= new TensorShapeProto();
            var dims = info.Type.TensorType.Shape.Dim;
            if (dims.Count == 0) dims.Add(new TensorShapeProto.Types.Dimension { DimParam = "batch" });
            int axis = rng.Next(dims.Count);
            switch (rng.Next(7))
            {
                case 0: dims[axis] = new TensorShapeProto.Types.Dimension { DimParam = "sym" + rng.Next(3) }; break;
                case 1: dims[axis] = new TensorShapeProto.Types.Dimension { DimValue = new long[] { 0, 1, 2, 3, 5, 64, 1 << 20 }[rng.Next(7)] }; break;
                case 2: if (dims[axis].ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue) dims[axis] = new TensorShapeProto.Types.Dimension { DimValue = dims[axis].DimValue + (rng.Next(2) == 0 ? 1 : -1) }; break;
                case 3: dims.RemoveAt(axis); break;
                case 4: dims.Add(new TensorShapeProto.Types.Dimension { DimValue = 1 }); break;
                case 5: info.Type.TensorType.ElemType = new[] { 10, 16, 6, 7, 11 }[rng.Next(5)]; break;
                case 6: info.Type.TensorType.Shape = null; break;
            }
        }
    }

    private sealed class Outcome
    {
        public int Ok, UserError, OrtLoad, OrtRun, Cases;
        public readonly List<string> Failures = new();
        public readonly Dictionary<string, int> OrtRunMessages = new();
    }

    private static readonly Lazy<SessionOptions> Options = new(() =>
    {
        var so = new SessionOptions { IntraOpNumThreads = 1 };
        so.RegisterCustomOpLibrary(MixAttention.Onnx.Runtime.Native.NativeLibraryPath.Path);
        return so;
    });

    private static void RunCase(string path, InferenceSession ort, string planJson, Random rng, Outcome outcome, string label)
    {
        var clock = Stopwatch.StartNew();
        outcome.Cases++;
        try
        {
            using var model = MixAttentionModel.FromSession(path, ort, planJson, new ModelOptions { IntraOpNumThreads = 1 });
            var config = new SessionConfig
            {
                MaxBatch = 1 + rng.Next(2),
                MaxLength = 4 + rng.Next(44),
                PrefillChunk = 1 + rng.Next(8),
                MaxCacheBytes = 32L << 20, // the memory cap
            };
            using var session = model.CreateSession(config);
            var seq = session.AddSequence();
            var tokens = RuntimeFixtures.RandomTokens(rng.Next(), 1 + rng.Next(Math.Min(config.MaxLength - 1, 10)), vocab: 100);
            session.Prefill(seq, tokens);
            session.Decode(new[] { seq }, new long[] { 3 });
            outcome.Ok++;
        }
        catch (MixAttentionException) { outcome.UserError++; }
        catch (OnnxRuntimeException e)
        {
            outcome.OrtRun++;
            var line = e.Message.Split('\n')[0];
            line = line.Length > 160 ? line[..160] : line;
            outcome.OrtRunMessages[line] = outcome.OrtRunMessages.GetValueOrDefault(line) + 1;
        }
        catch (Exception e)
        {
            if (outcome.Failures.Count < 10) outcome.Failures.Add($"{label}: {e.GetType().Name}: {e.Message}\nplan: {planJson}\n{e.StackTrace}");
            else outcome.Failures.Add(label);
        }
        if (clock.Elapsed.TotalSeconds > 10) outcome.Failures.Add($"{label}: took {clock.Elapsed.TotalSeconds:0.0} s (hang?)");
    }

    /// <summary>10,000 cases: plan mutations against the unmodified graph and against graph variants of three converted models.</summary>
    [TestMethod]
    [TestCategory("Slow")]
    public void MutatedPlansAndAxesFailCleanly()
    {
        int total = Iterations(10_000);
        const int perVariant = 200;
        var outcome = new Outcome();
        var clock = Stopwatch.StartNew();
        var rng = new Random(22);
        var bases = Bases.Select(b =>
        {
            var converted = RuntimeFixtures.Convert(b.Fixture, b.Layout, b.Window);
            var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(converted));
            var planJson = proto.MetadataProps.First(p => p.Key == CachePlan.MetadataKey).Value;
            var names = proto.Graph.Input.Select(i => i.Name).Concat(proto.Graph.Output.Select(o => o.Name)).ToList();
            return (Label: $"{b.Fixture}/{b.Layout}", Proto: proto, PlanJson: planJson, Plan: CachePlan.FromJson(planJson), Names: names);
        }).ToArray();
        var dir = TestPaths.TempDir();
        // Graph variants round-robin over the bases (the first of each unmodified), each with perVariant plans, until
        // the cases are done: a third plausible lies (windows, capacity rules, readers, heads ± 1), the rest anything.
        for (int v = 0; outcome.Cases < total; v++)
        {
            var b = bases[v % bases.Length];
            var variant = b.Proto.Clone();
            if (v >= bases.Length) MutateGraph(variant.Graph, rng, b.Plan);
            var path = Path.Combine(dir, $"v{v}.onnx");
            File.WriteAllBytes(path, variant.ToByteArray());
            InferenceSession ort;
            try { ort = new InferenceSession(path, Options.Value); }
            catch (OnnxRuntimeException) { outcome.OrtLoad++; outcome.Cases++; continue; } // MixAttentionModel.Open: exit 2
            using (ort)
            {
                RunCase(path, ort, b.PlanJson, rng, outcome, $"{b.Label} v{v} plan as converted");
                for (int i = 1; i < perVariant && outcome.Cases < total; i++)
                    RunCase(path, ort, i % 3 == 0 ? SoftMutatePlan(b.PlanJson, rng) : MutatePlan(b.PlanJson, rng, b.Names), rng, outcome, $"{b.Label} v{v} case {i}");
            }
        }
        Console.WriteLine($"{outcome.Cases} cases in {clock.Elapsed.TotalSeconds:0.0} s: {outcome.Ok} ran, {outcome.UserError} MixAttentionException, " +
            $"{outcome.OrtLoad} graph variants ORT refused to load, {outcome.OrtRun} ORT run errors, {outcome.Failures.Count} failures");
        foreach (var (message, n) in outcome.OrtRunMessages.OrderByDescending(x => x.Value).Take(8))
            Console.WriteLine($"  ORT run error ×{n}: {message}");
        Assert.IsGreaterThanOrEqualTo(total, outcome.Cases);
        Assert.IsEmpty(outcome.Failures, string.Join("\n\n", outcome.Failures.Take(10)));
        Assert.IsGreaterThan(0, outcome.Ok, "no case ran at all: the harness is broken");
    }

    /// <summary>The real executable on a few mutated models: exit 0, 1 or 2, never 3 or a signal (139 was the crash).</summary>
    [TestMethod]
    [TestCategory("Slow")]
    public void MutatedModelsThroughTheCliNeverExitThree()
    {
        var rng = new Random(2022);
        var converted = RuntimeFixtures.Convert("gemma3-torchscript");
        var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(converted));
        var planJson = proto.MetadataProps.First(p => p.Key == CachePlan.MetadataKey).Value;
        var plan = CachePlan.FromJson(planJson);
        var names = proto.Graph.Input.Select(i => i.Name).ToList();
        var dir = TestPaths.TempDir();
        for (int i = 0; i < Iterations(12); i++)
        {
            var variant = proto.Clone();
            if (i % 2 == 1) MutateGraph(variant.Graph, rng, plan);
            variant.MetadataProps.First(p => p.Key == CachePlan.MetadataKey).Value = MutatePlan(planJson, rng, names);
            var path = Path.Combine(dir, $"m{i}.onnx");
            File.WriteAllBytes(path, variant.ToByteArray());
            var (code, _, err) = InspectCliTests.Run("bench", path, "--context", "16", "--steps", "2", "--prefill-chunk", "4");
            Assert.IsTrue(code is 0 or 2, $"case {i}: exit {code}: {err}\nplan: {variant.MetadataProps.First(p => p.Key == CachePlan.MetadataKey).Value}");
        }
    }
}
