using System.Diagnostics;
using MixAttention.Onnx.Layouts;

namespace MixAttention.Onnx.Runtime.Tuning;

/// <summary>
/// A training-free search for the layout (which layers slide and with which window, which read another layer's cache)
/// that fits a KV budget at the least KL against the source on the user's text (<c>mixattn tune</c>).
/// <list type="number">
/// <item>Sensitivity: from the model's own layout (exact, the reference), change one layer at a time — make it global,
/// or sliding with each allowed window, or make it read an earlier layer's cache — and measure the mean KL on the text.</item>
/// <item>Search: a beam search over the layout language starting from every layer a global owner. A state's estimated
/// KL is the sum of its layers' measured sensitivities; each step applies the moves that save KV bytes (shrink an
/// owner's window, with its readers; make a reader-less owner read an earlier owner) and keeps the states with the
/// least estimated KL per byte saved. States within the budget are collected.</item>
/// <item>Confirmation: the best-estimated layouts within the budget run end to end (<see cref="TeacherForcing"/>, as
/// <see cref="Evaluation"/> does); the least measured KL wins.</item>
/// </list>
/// Every candidate is converted and opened in memory (<see cref="CandidateModels"/>); nothing is written per candidate.
/// </summary>
public static class LayoutSearch
{
    /// <summary>Runs the search on <paramref name="source"/> over <paramref name="tokens"/>.</summary>
    public static LayoutSearchResult Run(string source, IReadOnlyList<long> tokens, LayoutSearchOptions options, IProgress<TuningProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var clock = Stopwatch.StartNew();
        var models = new CandidateModels(source, options.Evaluation.Model, options.Backend);
        var ctx = models.Context;
        int layers = ctx.LayerCount;
        var native = models.Native;
        var windows = (options.Windows ?? ctx.Layers.Select(l => l.Window).Where(w => w > 0).ToArray()).Distinct().Order().ToArray();
        if (windows.Length == 0)
            throw new MixAttentionException($"{source} has no sliding windows of its own: pass the windows the search may use (--window W, several allowed).");
        var run = new TeacherForcing(tokens, options.Evaluation.Context ?? Evaluation.DefaultContext(windows.Max(), tokens.Count), options.Evaluation);
        int context = run.Context;
        long unconverted = KvMemory.Unconverted(ctx, context);
        long budget = options.BudgetBytes ?? (long)Math.Floor(options.BudgetRatio!.Value * unconverted);
        // Before any run: the budget must be reachable (every layer on the smallest window, sharing one cache if it may).
        int smallest = windows.Min();
        long floor = new[]
        {
            ToLayout(Enumerable.Range(0, layers).Select(i => (Window: smallest, Source: 0)).ToArray(), ctx),
            ToLayout(Enumerable.Range(0, layers).Select(i => (Window: smallest, Source: i)).ToArray(), ctx),
        }.OfType<MixAttentionLayout>().Select(l => KvMemory.Layout(l, ctx, context)).DefaultIfEmpty(0).Min();
        if (budget < floor)
            throw new MixAttentionException($"no layout of {source} fits {budget:N0} KV bytes per sequence at {context} tokens: with windows {string.Join(", ", windows)} " +
                $"the smallest needs {floor:N0}; raise the budget or allow smaller windows (--window).");
        var evaluated = new List<LayoutCandidate>();
        var byKey = new Dictionary<string, LayoutCandidate>(StringComparer.Ordinal);
        long Bytes(MixAttentionLayout layout) => KvMemory.Layout(layout, ctx, context);

        LayoutCandidate Evaluate(MixAttentionLayout layout, string role, double estimate, bool reference = false)
        {
            string key = layout.ToCompactString(withWindows: true);
            if (byKey.TryGetValue(key, out var known)) return known;
            using var model = models.Open(layout);
            var quality = reference ? run.RunReference(model, key, key) : run.Run(model, key, key);
            var candidate = new LayoutCandidate(layout, Bytes(layout), estimate, quality, role);
            evaluated.Add(candidate);
            byKey[key] = candidate;
            return candidate;
        }

        progress?.Report(new TuningProgress("running the model's own layout (the reference)", 0, 1));
        Evaluate(native, "native", 0, reference: true);

        // 1. Sensitivities, each one layer changed from the model's own layout.
        var windowChoices = Enumerable.Range(0, layers).Select(i => windows.Append(0).Append(ctx.Layers[i].Window).Distinct().Order().ToArray()).ToArray();
        var single = new Dictionary<(int Layer, int Window), double>();
        var pair = new Dictionary<(int Layer, int Source), double>();
        var probes = new List<(MixAttentionLayout Layout, Action<double> Store)>();
        for (int i = 0; i < layers; i++)
        {
            int layer = i;
            foreach (int w in windowChoices[i])
            {
                int window = w;
                if (w == ctx.Layers[i].Window) { single[(i, w)] = 0; continue; } // the layer as trained (owning a copy of a shared cache is exact)
                if (Replace(native, i, w, i, ctx) is { } probe) probes.Add((probe, kl => single[(layer, window)] = kl));
            }
        }
        for (int i = 0; i < layers; i++)
        {
            if (native.ReadersOf(i).Count > 0) continue; // an owner others read cannot become a reader
            int from = options.MaxShareDistance is { } d ? Math.Max(0, i - d) : 0;
            for (int j = from; j < i; j++)
            {
                if (!native[j].IsOwner) continue;
                if (native[i].KvSource == j) { pair[(i, j)] = 0; continue; }
                int layer = i, owner = j;
                int w = native[i].Window;
                var probe = Replace(native, i, w, j, ctx);
                if (probe is null) { w = native[j].Window; probe = Replace(native, i, w, j, ctx); }
                if (probe is null) continue;
                int window = w;
                // What sharing adds on top of the window the reader takes (measured above, or 0 when it is its own).
                probes.Add((probe, kl => pair[(layer, owner)] = Math.Max(0, kl - (single.TryGetValue((layer, window), out var s) ? s : 0))));
            }
        }
        for (int p = 0; p < probes.Count; p++)
        {
            progress?.Report(new TuningProgress("measuring layer and pair sensitivity", p, probes.Count));
            probes[p].Store(Evaluate(probes[p].Layout, "probe", double.NaN).Quality.MeanKl);
        }
        progress?.Report(new TuningProgress("measuring layer and pair sensitivity", probes.Count, probes.Count));

        // 2. Beam search from every layer a global owner (the exported model's caches).
        var start = Enumerable.Range(0, layers).Select(i => single.ContainsKey((i, 0)) ? (Window: 0, Source: i) : (Window: native[i].Window, Source: native[i].KvSource)).ToArray();
        double Estimate((int Window, int Source)[] state)
        {
            double sum = 0;
            for (int i = 0; i < layers; i++)
            {
                var (w, s) = state[i];
                if (w == native[i].Window && s == native[i].KvSource) continue;
                if (!single.TryGetValue((i, w), out var cost)) return double.PositiveInfinity;
                sum += cost;
                if (s != i) sum += pair.TryGetValue((i, s), out var share) ? share : double.PositiveInfinity;
            }
            return sum;
        }
        var startLayout = ToLayout(start, ctx) ?? native;
        long startBytes = Bytes(startLayout);
        double startCost = Estimate(start);
        var final = new Dictionary<string, (MixAttentionLayout Layout, double Cost, long Bytes)>(StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var beam = new List<(int Window, int Source)[]>();
        if (startBytes <= budget) final[startLayout.ToCompactString(true)] = (startLayout, startCost, startBytes);
        else beam.Add(start);
        int steps = 0;
        while (beam.Count > 0 && steps++ < 4 * layers + 8)
        {
            progress?.Report(new TuningProgress("searching layouts", Math.Min(steps, layers), layers));
            var children = new List<((int Window, int Source)[] State, double Score, double Cost, long Bytes, MixAttentionLayout Layout)>();
            foreach (var state in beam)
            {
                long parentBytes = Bytes(ToLayout(state, ctx)!);
                foreach (var child in Moves(state, windows, ctx))
                {
                    var layout = ToLayout(child, ctx);
                    if (layout is null) continue;
                    string key = layout.ToCompactString(true);
                    if (!seen.Add(key)) continue;
                    double cost = Estimate(child);
                    long bytes = Bytes(layout);
                    if (double.IsPositiveInfinity(cost) || bytes >= parentBytes) continue;
                    if (bytes <= budget) { final[key] = (layout, cost, bytes); continue; }
                    children.Add((child, (cost - startCost) / (startBytes - bytes), cost, bytes, layout));
                }
            }
            beam = children.OrderBy(c => c.Score).ThenBy(c => c.Cost).Take(options.BeamWidth).Select(c => c.State).ToList();
        }
        if (final.Count == 0)
            throw new MixAttentionException($"no layout of {source} fits {budget:N0} KV bytes per sequence at {context} tokens with windows {string.Join(", ", windows)}; " +
                "raise the budget or allow smaller windows (--window).");

        // 3. Confirm the best-estimated layouts end to end.
        var finalists = final.Values.OrderBy(f => f.Cost).ThenBy(f => f.Bytes).Take(options.Finalists).ToList();
        var confirmed = new List<LayoutCandidate>();
        for (int f = 0; f < finalists.Count; f++)
        {
            progress?.Report(new TuningProgress("confirming finalists", f, finalists.Count));
            var c = Evaluate(finalists[f].Layout, "finalist", finalists[f].Cost);
            confirmed.Add(c with { EstimatedKl = finalists[f].Cost });
        }
        progress?.Report(new TuningProgress("confirming finalists", finalists.Count, finalists.Count));
        var chosen = confirmed.OrderBy(c => c.Quality.MeanKl).ThenBy(c => c.KvBytesPerSequence).First();
        chosen = chosen with { Layout = chosen.Layout.WithName("tuned", LayoutOrigin.Programmatic, null) };
        var all = evaluated.Select(e => confirmed.FirstOrDefault(c => c.Layout.HasSameAssignments(e.Layout)) is { } c ? c with { Role = "finalist" } : e).ToList();
        var pareto = new List<LayoutCandidate>();
        double best = double.PositiveInfinity;
        foreach (var c in all.OrderBy(c => c.KvBytesPerSequence).ThenBy(c => c.Quality.MeanKl))
            if (c.Quality.MeanKl < best) { pareto.Add(c); best = c.Quality.MeanKl; }
        pareto.Reverse(); // largest KV first, as a table of savings reads
        return new LayoutSearchResult(chosen, options.MaxKl is not { } max || chosen.Quality.MeanKl <= max, pareto, all, budget, unconverted, context, clock.Elapsed);
    }

    /// <summary>States one move away that may save KV bytes.</summary>
    private static IEnumerable<(int Window, int Source)[]> Moves((int Window, int Source)[] state, int[] windows, LayoutContext ctx)
    {
        int n = state.Length;
        for (int i = 0; i < n; i++)
        {
            if (state[i].Source != i) continue;
            var group = Enumerable.Range(i, n - i).Where(r => state[r].Source == i).ToArray();
            int current = state[i].Window;
            // Shrink the owner's window (its readers follow: a reader sees no more than its owner keeps).
            foreach (int w in windows.Append(ctx.Layers[i].Window).Where(w => w > 0).Distinct())
            {
                if (current != 0 && w >= current) continue;
                var next = ((int Window, int Source)[])state.Clone();
                foreach (int r in group) next[r] = (w, i);
                yield return next;
            }
            // A reader-less owner reads an earlier owner, taking its kind and window.
            if (group.Length == 1)
                for (int j = 0; j < i; j++)
                    if (state[j].Source == j)
                    {
                        var next = ((int Window, int Source)[])state.Clone();
                        next[i] = (state[j].Window, j);
                        yield return next;
                    }
        }
    }

    private static MixAttentionLayout? Replace(MixAttentionLayout layout, int layer, int window, int source, LayoutContext ctx)
    {
        var state = layout.Layers.Select(l => (l.Window, l.KvSource)).ToArray();
        state[layer] = (window, source);
        return ToLayout(state, ctx);
    }

    private static MixAttentionLayout? ToLayout((int Window, int Source)[] state, LayoutContext ctx)
    {
        var layout = new MixAttentionLayout(state.Select((s, i) => new LayerAssignment(i, s.Source, s.Window)));
        return LayoutValidator.IsValid(layout, ctx) ? layout : null;
    }
}
