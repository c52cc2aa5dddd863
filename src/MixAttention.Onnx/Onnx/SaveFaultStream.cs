namespace MixAttention.Onnx.Onnx;

/// <summary>
/// A temporary file <see cref="OnnxModel.Save"/> writes, failing with an <see cref="IOException"/> once it holds
/// <c>failAt</c> bytes (the bytes before that offset are written and flushed, as a crash or a full disk would
/// leave them). Only the tests use it, through <see cref="OnnxSaveOptions.FailWriteAt"/>.
/// </summary>
internal sealed class SaveFaultStream : FileStream
{
    private readonly long _failAt;

    private SaveFaultStream(string path, long failAt) : base(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20)
        => _failAt = failAt;

    /// <summary>A new temporary file; it fails at the offset <paramref name="failAt"/> gives for its path (null: a plain file).</summary>
    public static FileStream Create(string path, Func<string, long?>? failAt) =>
        failAt?.Invoke(path) is { } offset
            ? new SaveFaultStream(path, offset)
            : new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);

    public override void Write(byte[] buffer, int offset, int count)
    {
        var room = _failAt - Position;
        if (count <= room) { base.Write(buffer, offset, count); return; }
        if (room > 0) base.Write(buffer, offset, (int)room);
        Flush(flushToDisk: true);
        throw new IOException($"Write failed at byte {_failAt} of '{Name}' (injected).");
    }

    // Every write, span or array, passes the offset check above.
    public override void Write(ReadOnlySpan<byte> buffer) => Write(buffer.ToArray(), 0, buffer.Length);

    public override void WriteByte(byte value) => Write(new[] { value });

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        Write(buffer, offset, count);
        return Task.CompletedTask;
    }

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Write(buffer.Span);
        return ValueTask.CompletedTask;
    }
}
