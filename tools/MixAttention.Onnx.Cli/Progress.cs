using MixAttention.Onnx.Runtime.Tuning;
using Spectre.Console;

namespace MixAttention.Onnx.Cli;

/// <summary>Progress bars for eval and tune on a terminal (one per stage); plain runs when output is redirected or JSON.</summary>
internal static class Progress
{
    public static T Run<T>(bool interactive, Func<IProgress<TuningProgress>?, T> work)
    {
        if (!interactive || Console.IsOutputRedirected || Console.IsErrorRedirected) return work(null);
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

    /// <summary>Reports on the calling thread (Progress&lt;T&gt; posts to the thread pool, which races the live display).</summary>
    private sealed class Sync(Action<TuningProgress> report) : IProgress<TuningProgress>
    {
        public void Report(TuningProgress value) => report(value);
    }
}
