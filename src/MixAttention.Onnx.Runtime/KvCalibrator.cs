using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Detection;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// The calibration run of <c>mixattn convert --kv-scale calibrate</c>: the source model (unconverted, on the CPU) reads
/// the calibration tokens in chunks, and after each chunk the rows it appended to every cache are folded into the
/// largest |K| and |V| per KV head and channel. Those are what the converter turns into the scales of quantized caches.
/// The same model and tokens always give the same result. Tokens past the positions the model has (a fused rotary's
/// cos/sin table rows, config.json's max_position_embeddings or n_positions) start a new sequence from an empty cache:
/// running on would fail in the export (a rotary table or position embedding too short) or leave its trained range.
/// </summary>
public static class KvCalibrator
{
    /// <summary>Tokens per call: small enough that a source which keeps only its window in the present loses no row unseen.</summary>
    internal const int Chunk = 8;

    /// <summary>Runs <paramref name="tokens"/> through <paramref name="sourceModel"/> and returns what the caches held.</summary>
    /// <param name="sourceModel">The unconverted export (the input of the conversion).</param>
    /// <param name="tokens">Calibration tokens (a few hundred).</param>
    /// <param name="description">What the tokens are, for the report (a file name, "random tokens").</param>
    /// <param name="allowExternalDataOutside">Trust external-data paths outside the model's folder.</param>
    /// <param name="progress">Fraction of the tokens read.</param>
    public static KvCalibration Run(string sourceModel, IReadOnlyList<long> tokens, string description, bool allowExternalDataOutside = false, IProgress<double>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (tokens.Count < 1) throw new MixAttentionException("the calibration needs at least one token.");
        var onnx = Onnx.OnnxModel.Load(sourceModel, new Onnx.OnnxLoadOptions { AllowExternalDataOutsideModelFolder = allowExternalDataOutside });
        if (Plan.CachePlan.FromModel(onnx.Proto) is not null)
            throw new MixAttentionException($"{sourceModel} is already converted; calibrate with the original export.");
        var graph = new Graph.ModelGraph(onnx);
        var config = ModelConfig.ForModel(onnx.SourcePath, allowExternalDataOutside);
        var detection = AttentionDetector.Detect(graph, config);
        var caches = detection.Sites.Where(s => s.Cache is not null).ToList();
        if (caches.Count == 0) throw new MixAttentionException($"{sourceModel}: no layer keeps a KV cache to calibrate.");
        var absMax = caches.ToDictionary(s => s.Layer, s => (Key: new float[s.KvNumHeads * s.HeadSize], Value: new float[s.KvNumHeads * s.HeadSize]));

        using var model = MixAttentionModel.Open(sourceModel, new ModelOptions { CheckModelFiles = !allowExternalDataOutside });
        int positions = MaxPositions(graph, config, detection.Sites) is { } max ? Math.Min(max, tokens.Count) : tokens.Count;
        using var session = (GrowingCacheSession)model.CreateSession(new SessionConfig { MaxBatch = 1, MaxLength = positions, PrefillChunk = Chunk });
        int sequence = session.AddSequence();
        var all = tokens.ToArray();
        for (int done = 0; done < all.Length;)
        {
            int used = done % positions;
            if (used == 0 && done > 0)
            {
                session.RemoveSequence(sequence);
                sequence = session.AddSequence();
            }
            int step = Math.Min(Math.Min(Chunk, positions - used), all.Length - done);
            session.Prefill(sequence, all.AsSpan(done, step));
            var past = session.PastOf(sequence);
            foreach (var site in caches)
            {
                var c = site.Cache!;
                var (k, v) = absMax[site.Layer];
                if (c.IsPacked)
                {
                    Fold(past[c.PastKey], site, c.Layout, step, k, part: 0);
                    Fold(past[c.PastKey], site, c.Layout, step, v, part: 1);
                }
                else
                {
                    Fold(past[c.PastKey], site, c.Layout, step, k, part: null);
                    Fold(past[c.PastValue!], site, c.Layout, step, v, part: null);
                }
            }
            done += step;
            progress?.Report((double)done / all.Length);
        }
        return new KvCalibration(description, all.Length, absMax.ToDictionary(p => p.Key, p => (p.Value.Key, p.Value.Value)));
    }

    /// <summary>
    /// The most positions one sequence may take: the fewest rows of any fused rotary's cos table (an initializer), and
    /// what config.json states. Null when neither says.
    /// </summary>
    internal static int? MaxPositions(Graph.ModelGraph graph, ModelConfig config, IEnumerable<AttentionSite> sites)
    {
        var limits = sites.Select(s => s.Rotary?.CosCache is { } cos && graph.Initializer(cos) is { Dims.Count: 2 } t && t.Dims[0] > 0 ? (int?)(int)Math.Min(t.Dims[0], int.MaxValue) : null)
            .Append(config.MaxPositions is > 0 ? config.MaxPositions : null)
            .OfType<int>().ToList();
        return limits.Count == 0 ? null : limits.Min();
    }

    /// <summary>
    /// Folds the last <paramref name="rows"/> positions of a cache tensor into <paramref name="absMax"/> (index h·D + d).
    /// The tensor is [B, H, T, D] (BNSH) or [B, T, H, D], with a leading K/V axis of 2 when packed.
    /// </summary>
    private static void Fold(OrtValue tensor, AttentionSite site, HeadLayout layout, int rows, float[] absMax, int? part)
    {
        var shape = tensor.GetTensorTypeAndShape();
        var dims = shape.Shape;
        float[] data = ToSingle(tensor, shape.ElementDataType, site);
        int offset = 0;
        if (part is { } p)
        {
            int half = data.Length / 2;
            offset = p * half;
            dims = dims[1..];
        }
        if (dims.Length != 4) throw new MixAttentionException($"layer {site.Layer}: a cache tensor of rank {dims.Length}; calibration reads [B, H, T, D] or [B, T, H, D].");
        bool bnsh = layout != HeadLayout.BSHD;
        long batch = dims[0], heads = bnsh ? dims[1] : dims[2], length = bnsh ? dims[2] : dims[1], headSize = dims[3];
        if (heads != site.KvNumHeads || headSize != site.HeadSize)
            throw new MixAttentionException($"layer {site.Layer}: its cache holds {heads} heads of {headSize}, detection found {site.KvNumHeads} of {site.HeadSize}.");
        for (long b = 0; b < batch; b++)
            for (long t = Math.Max(0, length - rows); t < length; t++)
                for (long h = 0; h < heads; h++)
                {
                    long start = offset + (bnsh ? ((b * heads + h) * length + t) * headSize : ((b * length + t) * heads + h) * headSize);
                    for (long d = 0; d < headSize; d++)
                    {
                        float x = Math.Abs(data[start + d]);
                        ref float m = ref absMax[h * headSize + d];
                        if (x > m || float.IsNaN(x)) m = x;
                    }
                }
    }

    private static float[] ToSingle(OrtValue tensor, TensorElementType type, AttentionSite site)
    {
        switch (type)
        {
            case TensorElementType.Float:
                return tensor.GetTensorDataAsSpan<float>().ToArray();
            case TensorElementType.Float16:
                var half = MemoryMarshal.Cast<Float16, Half>(tensor.GetTensorDataAsSpan<Float16>());
                var f = new float[half.Length];
                TensorPrimitives.ConvertToSingle(half, f);
                return f;
            case TensorElementType.BFloat16:
                var bf = MemoryMarshal.Cast<BFloat16, ushort>(tensor.GetTensorDataAsSpan<BFloat16>());
                var g = new float[bf.Length];
                for (int i = 0; i < bf.Length; i++) g[i] = BitConverter.UInt32BitsToSingle((uint)bf[i] << 16);
                return g;
            default:
                throw new MixAttentionException($"layer {site.Layer}: its cache is {type}; calibration reads fp32, fp16 and bf16 caches.");
        }
    }
}
