namespace MixAttention.Onnx.Layouts;

/// <summary>
/// The family of periodic layouts the Character.AI / MixAttention presets belong to: a global layer every
/// <see cref="Period"/> layers starting at <see cref="FirstGlobal"/>, sliding layers in between.
/// </summary>
/// <param name="Period">Distance between global layers (6 = 1 global : 5 sliding).</param>
/// <param name="FirstGlobal">Index of the first global layer; layers before it are sliding.</param>
/// <param name="Globals">How global layers share.</param>
/// <param name="Sliding">How sliding layers share within a run.</param>
public sealed record MixPattern(int Period, int FirstGlobal, GlobalSharing Globals, SlidingSharing Sliding)
{
    /// <summary>Per layer: (KV source, sliding?) for an <paramref name="layerCount"/>-layer model.</summary>
    public IReadOnlyList<(int KvSource, bool Sliding)> Map(int layerCount)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(Period, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(FirstGlobal);
        ArgumentOutOfRangeException.ThrowIfLessThan(layerCount, 1);
        var map = new (int KvSource, bool Sliding)[layerCount];
        var globals = new List<int>();
        for (var i = 0; i < layerCount; i++)
        {
            var global = i >= FirstGlobal && (i - FirstGlobal) % Period == 0;
            if (!global)
                continue;
            var g = globals.Count;
            var src = Globals switch
            {
                GlobalSharing.All => g == 0 ? i : globals[0],
                GlobalSharing.Pairs => g % 2 == 0 ? i : globals[g - 1],
                _ => i,
            };
            globals.Add(i);
            map[i] = (src, false);
        }
        // Sliding runs: maximal stretches of non-global layers.
        var start = -1;
        for (var i = 0; i <= layerCount; i++)
        {
            var sliding = i < layerCount && !globals.Contains(i);
            if (sliding && start < 0)
                start = i;
            if (!sliding && start >= 0)
            {
                AssignRun(map, start, i - start);
                start = -1;
            }
        }
        return map;
    }

    private void AssignRun((int KvSource, bool Sliding)[] map, int start, int length)
    {
        if (Sliding == SlidingSharing.None || length == 1)
        {
            for (var i = start; i < start + length; i++)
                map[i] = (i, true);
            return;
        }
        var pos = start;
        var end = start + length;
        while (pos < end)
        {
            var left = end - pos;
            var size = left == 3 ? 3 : 2;
            for (var i = pos; i < pos + size; i++)
                map[i] = (pos, true);
            pos += size;
        }
    }
}
