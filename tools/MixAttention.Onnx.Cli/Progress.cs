using System.Diagnostics;
using MixAttention.Onnx.Runtime.Tuning;
using Spectre.Console;

namespace MixAttention.Onnx.Cli;

/// <summary>
/// Progress of eval and tune: bars on a terminal (one per stage); when stderr is redirected (a log), one line per stage
/// and per tenth of it, with the elapsed time, so a long run shows how far it got.
/// </summary>
internal static class Progress
{
    public static T Run<T>(bool interactive, Func<IProgress<TuningProgress>?, T> work)
    {
        if (Console.IsErrorRedirected) return work(new Sync(Logger()));
        if (!interactive || Console.IsOutputRedirected) return work(null);
        T result = default!;
        AnsiConsole.Progress().AutoClear(true).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn()).Start(p =>
        {
            var tasks = new Dictionary<string, ProgressTask>();
            result = work(new Sync(e =>
            {
                if (!tasks.TryGetValue(e.Stage, out var t))
                {
                    foreach (var other in tasks.Values) other.Value = other.MaxValue;
                    tasks[e.Stage] = t = p.AddTask(Markup.Escape(e.Stage), maxValue: Math.Max(1, e.Total));
                }
                t.MaxValue = Math.Max(1, e.Total);
                t.Value = e.Done;
            }));
        });
        return result;
    }

    private static Action<TuningProgress> Logger()
    {
        var clock = Stopwatch.StartNew();
        string? stage = null;
        int tenth = -1;
        return e =>
        {
            int now = e.Total <= 0 ? 10 : 10 * e.Done / e.Total;
            if (e.Stage == stage && now == tenth) return;
            if (e.Stage != stage && e.Stage.StartsWith("running ", StringComparison.Ordinal) && stage is not null && !stage.StartsWith("running ", StringComparison.Ordinal))
                return; // the runs inside a search stage: the stage's own counter says enough
            stage = e.Stage;
            tenth = now;
            Console.Error.WriteLine($"[{clock.Elapsed.TotalSeconds,7:0.0} s] {e.Stage}: {e.Done}/{e.Total}");
        };
    }

    /// <summary>Reports on the calling thread (Progress&lt;T&gt; posts to the thread pool, which races the live display).</summary>
    private sealed class Sync(Action<TuningProgress> report) : IProgress<TuningProgress>
    {
        public void Report(TuningProgress value) => report(value);
    }
}
