namespace MixAttention.Onnx.Onnx;

/// <summary>How <see cref="OnnxModel.Save"/> writes a model.</summary>
public sealed record OnnxSaveOptions
{
    /// <summary>Overwrite an existing output file.</summary>
    public bool Overwrite { get; init; }
    /// <summary>Inline initializers with at least this many bytes are moved to the external-data file; null = keep them inline (unless the model could not be serialized otherwise).</summary>
    public long? ExternalizeAtLeastBytes { get; init; }
    /// <summary>Alignment of each tensor in the external-data file (lets ORT memory-map large tensors).</summary>
    public int ExternalDataAlignment { get; init; } = 64;
    /// <summary>
    /// When every external tensor lives in one source file, hard-link that file beside the output instead of
    /// copying it (same file system only; falls back to a streamed copy). Weights are then never read, whatever
    /// the model's size; tensors the graph no longer uses keep their bytes in the shared file. Off: always
    /// write a compact new data file.
    /// </summary>
    public bool LinkExternalData { get; init; } = true;
    /// <summary>
    /// Files written beside the model (plain names → content), staged and published with it: each is refused up front
    /// when it exists and <see cref="Overwrite"/> is off or it is not a regular file, and skipped when it is one of the
    /// input's files.
    /// </summary>
    internal IReadOnlyList<(string Name, byte[] Content)> SideFiles { get; init; } = Array.Empty<(string, byte[])>();
    /// <summary>More files the output must never replace (the input's side files): compared by real path and by identity.</summary>
    internal IReadOnlyList<string> ProtectedFiles { get; init; } = Array.Empty<string>();
    /// <summary>Tests only: for a temporary file Save writes, the byte offset at which writing it fails (null: never).</summary>
    internal Func<string, long?>? FailWriteAt { get; init; }
}
