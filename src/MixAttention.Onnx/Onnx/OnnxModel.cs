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
    private string? _realBase;

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
        SafeFiles.CheckPath(path, "model");
        var full = Path.GetFullPath(path);
        if (Directory.Exists(full))
        {
            var candidates = Directory.GetFiles(full, "*.onnx");
            if (candidates.Length != 1)
                throw new OnnxFormatException($"'{path}' is a folder with {candidates.Length} .onnx files; name the model file.");
            full = candidates[0];
        }
        if (SafeFiles.Stat(full, follow: true) is null)
            throw new OnnxFormatException($"Model file '{path}' does not exist.");

        ModelProto proto;
        // The model file itself may be a link (the user named it), but it must be a regular file: a FIFO would
        // block the read forever and /dev/zero would read until memory runs out.
        using (var stream = SafeFiles.OpenRegular(full, "Model file", ProtobufLimitBytes, followLink: true))
        {
            var length = stream.Length;
            if (length == 0)
                throw new OnnxFormatException($"'{path}' is empty, not an ONNX model.");
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
        if (r.Location.Contains('\0'))
            throw new OnnxFormatException($"Tensor '{tensorName}': external data location contains a NUL character.");
        var full = Path.GetFullPath(Path.Combine(BaseDirectory, r.Location));
        var root = BaseDirectory.EndsWith(Path.DirectorySeparatorChar) ? BaseDirectory : BaseDirectory + Path.DirectorySeparatorChar;
        string Outside(string where) =>
            $"Tensor '{tensorName}': external data location '{r.Location}' {where} the model's folder '{BaseDirectory}'; refusing to read it (allow it explicitly if you trust this model).";
        if (allowOutside != true && (Path.IsPathRooted(r.Location) || !full.StartsWith(root, StringComparison.Ordinal)))
            throw new OnnxFormatException(Outside("lies outside"));
        // Lexically inside is not inside: 'sub/passwd' with sub -> /etc, or 'w.bin' -> /etc/shadow. The real path
        // (every link resolved) must stay in the real folder; reads then open that real path with O_NOFOLLOW.
        var real = SafeFiles.RealPath(full);
        if (real is null) return full;
        if (allowOutside != true && !SafeFiles.IsInside(real, _realBase ??= SafeFiles.RealPath(BaseDirectory) ?? BaseDirectory))
            throw new OnnxFormatException(Outside($"leads through a symbolic link to '{real}', outside"));
        return real;
    }

    private void ValidateExternalData(bool allowOutside)
    {
        var sizes = new Dictionary<string, long>();
        foreach (var (tensor, r) in ExternalTensors())
        {
            var file = ResolveExternalPath(r, tensor.Name, allowOutside);
            if (!sizes.TryGetValue(file, out var size))
            {
                var id = SafeFiles.Stat(file, follow: false);
                if (id is null || id.Value.IsSymlink)
                    throw new OnnxFormatException($"Tensor '{tensor.Name}': external data file '{r.Location}' is missing (looked for '{file}').");
                if (!id.Value.IsRegular)
                    throw new OnnxFormatException($"Tensor '{tensor.Name}': external data file '{r.Location}' is {id.Value.Kind}, not a regular file; refusing to read it.");
                size = id.Value.Size;
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
        SafeFiles.CheckPath(path, "output");
        var given = Path.GetFullPath(path);
        var givenDir = Path.GetDirectoryName(given) ?? throw new OnnxFormatException($"'{path}' is not a file path.");
        var name = Path.GetFileName(given);
        if (name.Length == 0 || name is "." or "..")
            throw new OnnxFormatException($"'{path}' names a folder, not a model file.");
        try { Directory.CreateDirectory(givenDir); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new OnnxFormatException($"cannot create the output folder '{givenDir}': {e.Message}", e);
        }
        // Every decision below is made on real paths and file identities: an output reached through a linked folder,
        // /proc/self/cwd or a hard link is still recognized as the input it is.
        var dir = SafeFiles.RealPath(givenDir) ?? givenDir;
        var full = Path.Combine(dir, name);

        var inputs = new List<(string Path, FileIdentity Id)>();
        void Protect(string? file)
        {
            if (file is null) return;
            var real = SafeFiles.RealPath(file) ?? Path.GetFullPath(file);
            if (SafeFiles.Stat(real, follow: true) is { } id) inputs.Add((real, id));
        }
        Protect(SourcePath);
        var external = ExternalTensors().ToList();
        var sourceFiles = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (t, r) in external)
            sourceFiles.Add(ResolveExternalPath(r, t.Name));
        foreach (var f in sourceFiles) Protect(f);
        foreach (var f in options.ProtectedFiles) Protect(f);
        bool IsInput(string file, FileIdentity? id) =>
            inputs.Any(i => string.Equals(i.Path, file, StringComparison.Ordinal) || (id is { } x && x.SameFileAs(i.Id)));

        // The output itself: absent, or a regular file that is no input (never a link, folder or device).
        var existing = SafeFiles.Stat(full, follow: false);
        if (existing is { } e0)
        {
            if (IsInput(full, SafeFiles.Stat(full, follow: true)))
                throw new OnnxFormatException($"Refusing to overwrite '{path}': it is {(SourcePath is not null && SafeFiles.Stat(SourcePath, follow: true) is { } src && e0.SameFileAs(src) ? "the input model" : "the input model or a file it reads (its external data or a side file)")}; write to another file.");
            if (!e0.IsRegular)
                throw new OnnxFormatException($"Refusing to write '{path}': it is {e0.Kind}, not a regular file (the output is never written through a link or over a folder or device).");
            if (!options.Overwrite)
                throw new OnnxFormatException($"'{path}' already exists; pass --force to overwrite it.");
        }

        // Side files: refused up front (so nothing is published) when they exist without Overwrite, or are not
        // regular files; left alone when they are the input's own (the output went into the input's folder).
        var sides = new List<(string Target, string Name, byte[] Content)>();
        foreach (var (sideName, content) in options.SideFiles)
        {
            if (sideName.Length == 0 || sideName.Contains('/') || sideName.Contains('\0') || sideName is "." or "..")
                throw new ArgumentException($"side file name '{sideName}' is not a plain file name.", nameof(options));
            var target = Path.Combine(dir, sideName);
            var id = SafeFiles.Stat(target, follow: false);
            if (id is { } s0)
            {
                if (IsInput(target, SafeFiles.Stat(target, follow: true))) continue;
                if (!s0.IsRegular)
                    throw new OnnxFormatException($"Refusing to write '{target}': it is {s0.Kind}, not a regular file.");
                if (!options.Overwrite)
                    throw new OnnxFormatException($"'{target}' already exists (another model's?); pass --force to overwrite it.");
            }
            sides.Add((target, sideName, content));
        }

        // Replacing an existing output: write the new weights under a fresh name, so that until the model file
        // itself is swapped (one atomic rename) the old model still finds its old data, and after it the new
        // model finds the new data. The old model's data files are deleted last — only those it records as
        // written by this tool, under the names this tool gives them.
        var oldDataFiles = existing is not null ? DataFilesOf(full) : new List<string>();
        var dataName = name + ".data";
        if (SafeFiles.Stat(Path.Combine(dir, dataName), follow: false) is not null)
            dataName = $"{name}.{Guid.NewGuid().ToString("N")[..8]}.data";
        var dataPath = Path.Combine(dir, dataName);

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
        var written = output.MetadataProps.Where(p => p.Key == WrittenDataKey).ToList();
        foreach (var p in written) output.MetadataProps.Remove(p);
        if (toExternal.Count > 0)
            output.MetadataProps.Add(new StringStringEntryProto { Key = WrittenDataKey, Value = new System.Text.Json.Nodes.JsonArray(dataName).ToJsonString() });

        var tmpModel = Path.Combine(dir, $".{name}.{Guid.NewGuid():N}.tmp");
        var tmpData = toExternal.Count > 0 ? Path.Combine(dir, $".{dataName}.{Guid.NewGuid():N}.tmp") : null;
        var tmpSides = sides.Select(x => Path.Combine(dir, $".{x.Name}.{Guid.NewGuid():N}.tmp")).ToList();
        try
        {
            try
            {
                if (tmpData is not null)
                {
                    var single = toExternal.All(t => t.Ref is not null) ? toExternal.Select(t => ResolveExternalPath(t.Ref!, t.Src.Name)).Distinct().ToList() : null;
                    if (options.LinkExternalData && single is [var onlySource] && SafeFiles.Stat(onlySource, follow: false) is { IsRegular: true } && HardLink.TryCreate(onlySource, tmpData))
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
                for (int i = 0; i < sides.Count; i++)
                    using (var fs = new FileStream(tmpSides[i], FileMode.CreateNew, FileAccess.Write, FileShare.None))
                    {
                        fs.Write(sides[i].Content);
                        fs.Flush(flushToDisk: true);
                    }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new OnnxFormatException($"cannot write the output in '{dir}': {e.Message}", e);
            }
            // Everything is staged; publish: data first, under a name no existing model uses; then the side files;
            // then the model in one rename; then the old data.
            if (tmpData is not null)
                File.Move(tmpData, dataPath, overwrite: false);
            for (int i = 0; i < sides.Count; i++)
                File.Move(tmpSides[i], sides[i].Target, overwrite: true);
            File.Move(tmpModel, full, overwrite: true);
            foreach (var old in oldDataFiles)
            {
                if (string.Equals(old, dataPath, StringComparison.Ordinal) || string.Equals(old, full, StringComparison.Ordinal) || sourceFiles.Contains(old))
                    continue;
                // A name of the input (or a file the input reads) is never deleted; a hard link to the input's data
                // (LinkExternalData) is another name of it and may go.
                if (inputs.Any(i => string.Equals(i.Path, old, StringComparison.Ordinal))) continue;
                if (SafeFiles.Stat(old, follow: false) is { IsRegular: true })
                    File.Delete(old);
            }
        }
        finally
        {
            if (File.Exists(tmpModel)) File.Delete(tmpModel);
            if (tmpData is not null && File.Exists(tmpData)) File.Delete(tmpData);
            foreach (var t in tmpSides) if (File.Exists(t)) File.Delete(t);
        }
        progress?.Report(1.0);
    }

    /// <summary>metadata_props key listing (JSON array of names) the external-data files this tool wrote beside the model.</summary>
    public const string WrittenDataKey = "mixattention.written_data";

    /// <summary>
    /// The data files a previous output may have deleted when it is replaced: only those its metadata records as written
    /// by this tool (<see cref="WrittenDataKey"/>), named as this tool names them (<c>NAME.data</c> or <c>NAME.xxxxxxxx.data</c>),
    /// in its own folder. A model that records nothing (another tool's, or a hostile one naming the input or notes.txt)
    /// gets nothing deleted.
    /// </summary>
    /// <summary>
    /// Removes a model this tool wrote and the data files its metadata records (<see cref="WrittenDataKey"/>), as a
    /// later <c>--force</c> would: a file the model does not record as its own is left alone.
    /// </summary>
    internal static void DeleteWritten(string modelPath)
    {
        foreach (var data in DataFilesOf(modelPath))
            if (SafeFiles.Stat(data, follow: false) is { IsRegular: true }) File.Delete(data);
        if (SafeFiles.Stat(modelPath, follow: false) is { IsRegular: true }) File.Delete(modelPath);
    }

    private static List<string> DataFilesOf(string modelPath)
    {
        try
        {
            var old = Load(modelPath, new OnnxLoadOptions { ValidateExternalData = false });
            var record = old.Proto.MetadataProps.FirstOrDefault(p => p.Key == WrittenDataKey)?.Value;
            if (record is null) return new List<string>();
            var names = System.Text.Json.Nodes.JsonNode.Parse(record) as System.Text.Json.Nodes.JsonArray;
            var dir = Path.GetDirectoryName(modelPath)!;
            var model = Path.GetFileName(modelPath);
            var referenced = old.ExternalTensors().Select(t => t.Ref.Location).ToHashSet(StringComparer.Ordinal);
            return (names ?? new System.Text.Json.Nodes.JsonArray())
                .Select(n => n is System.Text.Json.Nodes.JsonValue v && v.TryGetValue<string>(out var x) ? x : null)
                .Where(n => n is not null && referenced.Contains(n) && IsOurDataName(model, n))
                .Select(n => Path.Combine(dir, n!))
                .Distinct().ToList();
        }
        catch (Exception e) when (e is MixAttentionException or System.Text.Json.JsonException)
        {
            return new List<string>();
        }
    }

    private static bool IsOurDataName(string model, string? name)
    {
        if (name is null || name.Contains('/') || name.Contains('\\')) return false;
        if (name == model + ".data") return true;
        var prefix = model + ".";
        return name.Length == prefix.Length + 8 + 5 && name.StartsWith(prefix, StringComparison.Ordinal) && name.EndsWith(".data", StringComparison.Ordinal)
            && name.AsSpan(prefix.Length, 8).IndexOfAnyExcept("0123456789abcdef") < 0;
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
                        reader = SafeFiles.OpenRegular(file, $"Tensor '{src.Name}': external data file");
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
        var id = SafeFiles.Stat(file, follow: false);
        if (id is not { IsRegular: true })
            throw new OnnxFormatException($"Tensor '{tensor.Name}': external data file '{r.Location}' is missing or not a regular file.");
        return id.Value.Size - r.Offset;
    }
}
