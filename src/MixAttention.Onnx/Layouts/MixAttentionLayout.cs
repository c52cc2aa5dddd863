using System.Text;
using System.Text.Json;

namespace MixAttention.Onnx.Layouts;

/// <summary>
/// For every layer of a model: global or sliding (window W), and which layer's KV cache it reads.
/// A layout is only a description; <see cref="LayoutValidator"/> says whether it is valid for a model.
/// </summary>
public sealed class MixAttentionLayout
{
    private readonly LayerAssignment[] _layers;
    private readonly int[] _owners;

    /// <summary>Creates a layout. <paramref name="layers"/> must hold layers 0..n-1 in order.</summary>
    /// <param name="layers">One assignment per layer.</param>
    /// <param name="name">A short name: the preset name, the file name, or "custom".</param>
    /// <param name="origin">Where it came from.</param>
    /// <param name="spec">The text the user gave (compact string, path, preset name), if any.</param>
    public MixAttentionLayout(IEnumerable<LayerAssignment> layers, string name = "custom",
        LayoutOrigin origin = LayoutOrigin.Programmatic, string? spec = null)
    {
        ArgumentNullException.ThrowIfNull(layers);
        ArgumentNullException.ThrowIfNull(name);
        _layers = layers.ToArray();
        if (_layers.Length == 0)
            throw new ArgumentException("a layout needs at least one layer", nameof(layers));
        for (var i = 0; i < _layers.Length; i++)
            if (_layers[i] is null || _layers[i].Layer != i)
                throw new ArgumentException($"assignment at position {i} is for layer {_layers[i]?.Layer}; layers must be 0..n-1 in order", nameof(layers));
        _owners = _layers.Where(l => l.IsOwner).Select(l => l.Layer).ToArray();
        Name = name;
        Origin = origin;
        Spec = spec;
    }

    /// <summary>One assignment per layer, index = layer.</summary>
    public IReadOnlyList<LayerAssignment> Layers => _layers;

    /// <summary>Number of layers.</summary>
    public int Count => _layers.Length;

    /// <summary>The layers that own a cache, ascending.</summary>
    public IReadOnlyList<int> Owners => _owners;

    /// <summary>A short name: preset name, file name or "custom".</summary>
    public string Name { get; }

    /// <summary>Where the layout came from.</summary>
    public LayoutOrigin Origin { get; }

    /// <summary>The text the user gave, if any.</summary>
    public string? Spec { get; }

    /// <summary>The assignment of one layer.</summary>
    public LayerAssignment this[int layer] => _layers[layer];

    /// <summary>The layers (other than <paramref name="owner"/> itself) that read <paramref name="owner"/>'s cache, ascending.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="owner"/> is not a layer of this layout.</exception>
    /// <exception cref="ArgumentException"><paramref name="owner"/> does not own a cache.</exception>
    public IReadOnlyList<int> ReadersOf(int owner)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(owner);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(owner, _layers.Length);
        if (!_layers[owner].IsOwner)
            throw new ArgumentException($"layer {owner} is not an owner (it reads layer {_layers[owner].KvSource})", nameof(owner));
        return _layers.Where(l => l.KvSource == owner && l.Layer != owner).Select(l => l.Layer).ToArray();
    }

    /// <summary>
    /// The compact form: one token per layer joined by <c>_</c>: the KV source index, <c>s</c> suffix for sliding.
    /// With <paramref name="withWindows"/> sliding tokens carry their window (<c>1s1024</c>), which makes the string lossless.
    /// </summary>
    public string ToCompactString(bool withWindows = false) =>
        string.Join('_', _layers.Select(l => l.ToToken(withWindows)));

    /// <summary>
    /// True when the compact string without windows loses nothing given one window: every sliding layer has window
    /// <paramref name="window"/>.
    /// </summary>
    public bool HasUniformWindow(int window) => _layers.All(l => l.IsGlobal || l.Window == window);

    /// <summary>The distinct sliding windows used, ascending.</summary>
    public IReadOnlyList<int> SlidingWindows => _layers.Where(l => l.IsSliding).Select(l => l.Window).Distinct().Order().ToArray();

    /// <summary>The version-1 JSON document (see docs/layouts.md), one layer per line.</summary>
    public string ToJson()
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteNumber("version", LayoutJson.Version);
            w.WriteString("name", Name);
            w.WriteStartArray("layers");
            foreach (var l in _layers)
                w.WriteRawValue($"{{\"layer\": {l.Layer}, \"kv\": {l.KvSource}, \"window\": {l.Window}{(l.KvDType is { } dt ? $", \"kv_dtype\": \"{JsonEncodedText.Encode(dt)}\"" : "")}}}", skipInputValidation: true);
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>True when both layouts assign every layer the same source and window (names and origins are ignored).</summary>
    public bool HasSameAssignments(MixAttentionLayout other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return _layers.SequenceEqual(other._layers);
    }

    /// <summary>A copy with another name/origin/spec.</summary>
    public MixAttentionLayout WithName(string name, LayoutOrigin origin, string? spec) => new(_layers, name, origin, spec);

    /// <inheritdoc />
    public override string ToString() => $"{Name}: {ToCompactString(withWindows: true)}";
}
