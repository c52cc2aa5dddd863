namespace MixAttention.Onnx.Layouts;

/// <summary>How closely a preset follows its source.</summary>
public enum PresetProvenance
{
    /// <summary>Reproduces its source's per-layer map exactly at the source's layer count; other counts follow a documented rule.</summary>
    Exact,
    /// <summary>A rule stated by its source (e.g. "layer i is global iff (i+1) % 6 == 0"), applied at any layer count.</summary>
    Rule,
    /// <summary>Our reconstruction from a prose description; the source's exact map could not be verified (see docs/layouts.md).</summary>
    Reconstructed,
}
