namespace MixAttention.Onnx.Tests.Support;

/// <summary>Numeric comparisons shared by the tests.</summary>
public static class Compare
{
    /// <summary>Largest |a[i] − b[i]|; NaN as soon as either side has a NaN (a poisoned cache slot was read).</summary>
    public static float MaxAbsDiff(float[] a, float[] b)
    {
        Assert.HasCount(a.Length, b);
        float max = 0;
        for (int i = 0; i < a.Length; i++)
        {
            var d = Math.Abs(a[i] - b[i]);
            if (float.IsNaN(d)) return float.NaN;
            max = Math.Max(max, d);
        }
        return max;
    }
}
