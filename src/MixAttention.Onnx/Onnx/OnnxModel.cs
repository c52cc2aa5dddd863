using Google.Protobuf;
using MixAttention.Onnx.Interop;
using MixAttention.Onnx.Onnx.Proto;

namespace MixAttention.Onnx.Onnx;

/// <summary>
/// An ONNX model as a <see cref="ModelProto"/> plus the folder its external data is relative to.
/// Loading never reads external weights; saving streams them from their source files into one
/// data file beside the output, rewriting location/offset/length, and publishes model and data
/// atomically (temp files, then rename).
/// </summary>
internal sealed class OnnxModel
{
    /// <summary>Protobuf's hard limit on one serialized message: models larger than this need external data.</summary>
    public const long ProtobufLimitBytes = int.MaxValue;

    private OnnxModel(ModelProto proto, string? sourcePath, string? baseDirectory, bool allowOutside = false)
    {
        _allowOutside = allowOutside;
        Proto = proto;
        SourcePath = sourcePath;
        BaseDirectory = baseDirectory;
    }

    private readonly bool _allowOutside;

    /// <summary>The model message; edit it through <c>ModelGraph</c> to keep links consistent.</summary>
    public ModelProto Proto { get; }
    /// <summary>Full path of the file the model was loaded from, if any.</summary>
    public string? SourcePath { get; }
    /// <summary>Folder that external-data locations are relative to.</summary>
    public string? BaseDirectory { get; }

    /// <summary>Wraps an in-memory model; <paramref name="baseDirectory"/> resolves its external data, if it has any.</summary>
    public static OnnxModel FromProto(ModelProto proto, string? baseDirectory = null) =>
        new(proto, null, baseDirectory is null ? null : Path.GetFullPath(baseDirectory));

    /// <summary>Loads a model file. Throws <see cref="OnnxFormatException"/> with a clear message for anything that is not a usable ONNX model.</summary>
    public static OnnxModel Load(string path, OnnxLoadOptions? options = null)
    {
        options ??= new OnnxLoadOptions();
        var full = Path.GetFullPath(path);
        if (Directory.Exists(full))
        {
            var candidates = Directory.GetFiles(full, "*.onnx");
            if (candidates.Length != 1)
                throw new OnnxFormatException($"'{path}' is a folder with {candidates.Length} .onnx files; name the model file.");
            full = candidates[0];
        }
        if (!File.Exists(full))
            throw new OnnxFormatException($"Model file '{path}' does not exist.");
        var length = new FileInfo(full).Length;
        if (length == 0)
            throw new OnnxFormatException($"'{path}' is empty, not an ONNX model.");
        if (length > ProtobufLimitBytes)
            throw new OnnxFormatException($"'{path}' is {length} bytes, over protobuf's 2 GiB limit: a valid ONNX model this large keeps its weights in external data files.");

        ModelProto proto;
        using (var stream = new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20))
        {
            try
            {
                var input = new CodedInputStream(stream);
                proto = ModelProto.Parser.ParseFrom(input);
            }
            catch (InvalidProtocolBufferException e)
            {
                throw new OnnxFormatException($"'{path}' is not a valid ONNX model: the protobuf data is malformed or truncated ({e.Message}).", e);
            }
        }
        if (proto.Graph is null || !proto.HasIrVersion || proto.IrVersion <= 0)
            throw new OnnxFormatException($"'{path}' is not an ONNX model: it has no {(proto.Graph is null ? "graph" : "IR version")}.");
        if (proto.Graph.Node.Count == 0)
            throw new OnnxFormatException($"'{path}' has an empty graph (no nodes).");
        try { ModelValidator.Validate(proto); }
        catch (OnnxFormatException e) { throw new OnnxFormatException($"'{path}': {e.Message}", e); }

        var model = new OnnxModel(proto, full, Path.GetDirectoryName(full)!, options.AllowExternalDataOutsideModelFolder);
        if (options.ValidateExternalData)
            model.ValidateExternalData(options.AllowExternalDataOutsideModelFolder);
        return model;
    }

    /// <summary>
    /// Parses and validates a model from bytes (tests, fuzzing, tools) exactly as <see cref="Load"/> does a file,
    /// external data excepted: that resolves against <paramref name="baseDirectory"/> and is not checked.
    /// </summary>
    public static OnnxModel Parse(byte[] bytes, string? baseDirectory = null)
    {
        ModelProto proto;
        try
        {
            proto = ModelProto.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new OnnxFormatException($"Not a valid ONNX model: the protobuf data is malformed or truncated ({e.Message}).", e);
        }
        if (proto.Graph is null || !proto.HasIrVersion || proto.IrVersion <= 0)
            throw new OnnxFormatException($"Not an ONNX model: it has no {(proto.Graph is null ? "graph" : "IR version")}.");
        ModelValidator.Validate(proto);
        return FromProto(proto, baseDirectory);
    }

    /// <summary>Every tensor that keeps its bytes in an external file, with where.</summary>
    public IEnumerable<(TensorProto Tensor, ExternalDataRef Ref)> ExternalTensors()
    {
        foreach (var t in ExternalDataRef.AllTensors(Proto))
            if (ExternalDataRef.Of(t) is { } r)
                yield return (t, r);
    }

    /// <summary>Resolves an external-data location to a full path, refusing paths outside the model folder unless allowed.</summary>
    public string ResolveExternalPath(ExternalDataRef r, string tensorName, bool? allowOutside = null)
    {
        allowOutside ??= _allowOutside;
        if (BaseDirectory is null)
            throw new OnnxFormatException($"Tensor '{tensorName}' keeps its data in '{r.Location}', but the model has no folder to resolve it against.");
        var full = Path.GetFullPath(Path.Combine(BaseDirectory, r.Location));
        var root = BaseDirectory.EndsWith(Path.DirectorySeparatorChar) ? BaseDirectory : BaseDirectory + Path.DirectorySeparatorChar;
        if (allowOutside != true && (Path.IsPathRooted(r.Location) || !full.StartsWith(root, StringComparison.Ordinal)))
            throw new OnnxFormatException($"Tensor '{tensorName}': external data location '{r.Location}' lies outside the model's folder '{BaseDirectory}'; refusing to read it (allow it explicitly if you trust this model).");
        return full;
    }

    private void ValidateExternalData(bool allowOutside)
    {
        var sizes = new Dictionary<string, long>();
        foreach (var (tensor, r) in ExternalTensors())
        {
            var file = ResolveExternalPath(r, tensor.Name, allowOutside);
            if (!sizes.TryGetValue(file, out var size))
            {
                if (!File.Exists(file))
                    throw new OnnxFormatException($"Tensor '{tensor.Name}': external data file '{r.Location}' is missing (looked for '{file}').");
                size = new FileInfo(file).Length;
                sizes[file] = size;
            }
            var end = r.Offset + (r.Length ?? 0);
            if (r.Offset > size || end > size)
                throw new OnnxFormatException($"Tensor '{tensor.Name}': external data [{r.Offset}, {end}) lies past the end of '{r.Location}' ({size} bytes).");
            var expected = TensorBytes(tensor);
            if (r.Length is { } len && expected is { } e && len != e)
                throw new OnnxFormatException($"Tensor '{tensor.Name}': external data length {len} does not match its shape [{string.Join(",", tensor.Dims)}] of {(TensorProto.Types.DataType)tensor.DataType} ({e} bytes).");
        }
    }

    /// <summary>Bytes a dense tensor of this shape and type occupies, or null for strings / sub-byte types / negative dims.</summary>
    public static long? TensorBytes(TensorProto tensor)
    {
        var elem = ElementSize(tensor.DataType);
        if (elem is null) return null;
        long count = 1;
        foreach (var d in tensor.Dims)
        {
            if (d < 0) return null;
            count = checked(count * d);
        }
        return checked(count * elem.Value);
    }

    /// <summary>Bytes per element of an ONNX data type, or null when not byte-sized (strings, 4-bit types).</summary>
    public static int? ElementSize(int dataType) => Plan.ElementTypes.Size(dataType);

    /// <summary>
    /// Writes the model to <paramref name="path"/>. External tensors are streamed from their source files
    /// into <c>&lt;file name&gt;.data</c> beside the output (offsets rewritten), so the output folder is
    /// self-contained and tensors the graph no longer uses are not carried along. Model and data appear
    /// atomically: both are written to temporary files first and renamed only when complete.
    /// </summary>
    public void Save(string path, OnnxSaveOptions? options = null, IProgress<double>? progress = null)
    {
        options ??= new OnnxSaveOptions();
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        if (SourcePath is not null && string.Equals(full, SourcePath, StringComparison.Ordinal))
            throw new OnnxFormatException($"Refusing to overwrite the input model '{path}'; write to another file.");
        if (File.Exists(full) && !options.Overwrite)
            throw new OnnxFormatException($"'{path}' already exists; pass --force to overwrite it.");

        // Replacing an existing output: write the new weights under a fresh name, so that until the model file
        // itself is swapped (one atomic rename) the old model still finds its old data, and after it the new
        // model finds the new data. The old model's data files are deleted last.
        var oldDataFiles = File.Exists(full) ? DataFilesOf(full) : new List<string>();
        var dataName = Path.GetFileName(full) + ".data";
        if (File.Exists(Path.Combine(dir, dataName)))
            dataName = $"{Path.GetFileName(full)}.{Guid.NewGuid().ToString("N")[..8]}.data";
        var dataPath = Path.Combine(dir, dataName);
        var sourceFiles = new HashSet<string>(StringComparer.Ordinal);
        var external = ExternalTensors().ToList();
        foreach (var (t, r) in external)
            sourceFiles.Add(ResolveExternalPath(r, t.Name));
        if (sourceFiles.Contains(dataPath))
            throw new OnnxFormatException($"Refusing to write '{dataPath}': it is the external data of the input model.");

        // Work on a copy so a failed save leaves this model untouched.
        var output = Proto.Clone();
        var outTensors = ExternalDataRef.AllTensors(output).ToList();
        var srcTensors = ExternalDataRef.AllTensors(Proto).ToList();

        var toExternal = new List<(TensorProto Out, TensorProto Src, ExternalDataRef? Ref)>();
        long inlineBytes = 0;
        for (int i = 0; i < outTensors.Count; i++)
        {
            var r = ExternalDataRef.Of(srcTensors[i]);
            if (r is not null)
                toExternal.Add((outTensors[i], srcTensors[i], r));
            else if (options.ExternalizeAtLeastBytes is { } threshold && srcTensors[i].RawData.Length >= threshold && srcTensors[i].RawData.Length > 0)
                toExternal.Add((outTensors[i], srcTensors[i], null));
            else
                inlineBytes += srcTensors[i].RawData.Length;
        }

        var tmpModel = Path.Combine(dir, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        var tmpData = toExternal.Count > 0 ? Path.Combine(dir, $".{dataName}.{Guid.NewGuid():N}.tmp") : null;
        try
        {
            if (tmpData is not null)
            {
                var single = toExternal.All(t => t.Ref is not null) ? toExternal.Select(t => ResolveExternalPath(t.Ref!, t.Src.Name)).Distinct().ToList() : null;
                if (options.LinkExternalData && single is [var onlySource] && HardLink.TryCreate(onlySource, tmpData))
                    foreach (var (outTensor, _, r) in toExternal)
                        (r! with { Location = dataName }).ApplyTo(outTensor);
                else
                    WriteExternalData(tmpData, dataName, toExternal, options.ExternalDataAlignment, progress, options.FailWriteAt);
            }

            var size = output.CalculateSize();
            if (size < 0 || size > ProtobufLimitBytes)
                throw new OnnxFormatException($"The model would be {size} bytes inline, over protobuf's 2 GiB limit; save it with external data (ExternalizeAtLeastBytes).");
            using (var fs = SaveFaultStream.Create(tmpModel, options.FailWriteAt))
            {
                output.WriteTo(fs);
                fs.Flush(flushToDisk: true);
            }
            // Data first, under a name no existing model uses; then the model in one rename; then the old data.
            if (tmpData is not null)
                File.Move(tmpData, dataPath, overwrite: false);
            File.Move(tmpModel, full, overwrite: true);
            foreach (var old in oldDataFiles)
                if (!string.Equals(old, dataPath, StringComparison.Ordinal) && !sourceFiles.Contains(old) && File.Exists(old))
                    File.Delete(old);
        }
        finally
        {
            if (File.Exists(tmpModel)) File.Delete(tmpModel);
            if (tmpData is not null && File.Exists(tmpData)) File.Delete(tmpData);
        }
        progress?.Report(1.0);
    }

    /// <summary>External-data files in the model's own folder that an existing model file references (best effort: a broken old model references none).</summary>
    private static List<string> DataFilesOf(string modelPath)
    {
        try
        {
            var old = Load(modelPath, new OnnxLoadOptions { ValidateExternalData = false });
            var dir = Path.GetDirectoryName(modelPath)!;
            return old.ExternalTensors()
                .Select(t => Path.GetFullPath(Path.Combine(dir, t.Ref.Location)))
                .Where(f => string.Equals(Path.GetDirectoryName(f), dir, StringComparison.Ordinal))
                .Distinct().ToList();
        }
        catch (MixAttentionException)
        {
            return new List<string>();
        }
    }

    private void WriteExternalData(string tmpData, string dataName,
        List<(TensorProto Out, TensorProto Src, ExternalDataRef? Ref)> tensors, int alignment, IProgress<double>? progress,
        Func<string, long?>? failWriteAt)
    {
        long total = 0;
        foreach (var (_, src, r) in tensors)
            total += r is null ? src.RawData.Length : ResolvedLength(src, r);

        var buffer = new byte[1 << 22];
        long written = 0;
        var readers = new Dictionary<string, FileStream>(StringComparer.Ordinal);
        try
        {
            using var outStream = SaveFaultStream.Create(tmpData, failWriteAt);
            foreach (var (outTensor, src, r) in tensors)
            {
                var pad = (alignment - (int)(outStream.Position % alignment)) % alignment;
                if (pad > 0) outStream.Write(new byte[pad]);
                var offset = outStream.Position;
                long length;
                if (r is null)
                {
                    length = src.RawData.Length;
                    src.RawData.WriteTo(outStream);
                }
                else
                {
                    var file = ResolveExternalPath(r, src.Name);
                    if (!readers.TryGetValue(file, out var reader))
                    {
                        reader = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
                        readers[file] = reader;
                    }
                    length = r.Length ?? reader.Length - r.Offset;
                    reader.Position = r.Offset;
                    long left = length;
                    while (left > 0)
                    {
                        var n = reader.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
                        if (n <= 0)
                            throw new OnnxFormatException($"Tensor '{src.Name}': external data file '{r.Location}' ended early.");
                        outStream.Write(buffer, 0, n);
                        left -= n;
                        written += n;
                        progress?.Report(total == 0 ? 1 : 0.99 * written / total);
                    }
                }
                new ExternalDataRef(dataName, offset, length).ApplyTo(outTensor);
            }
            outStream.Flush(flushToDisk: true);
        }
        finally
        {
            foreach (var r in readers.Values) r.Dispose();
        }
    }

    private long ResolvedLength(TensorProto tensor, ExternalDataRef r)
    {
        if (r.Length is { } l) return l;
        var file = ResolveExternalPath(r, tensor.Name);
        return new FileInfo(file).Length - r.Offset;
    }
}
