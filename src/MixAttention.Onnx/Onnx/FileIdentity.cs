namespace MixAttention.Onnx.Onnx;

/// <summary>What a path names: its file type, size and identity (device and inode numbers).</summary>
internal readonly record struct FileIdentity(ulong Device, ulong Inode, uint Mode, long Size)
{
    private const uint TypeMask = 0xF000;
    /// <summary>A regular file (not a folder, link, FIFO, socket or device).</summary>
    public bool IsRegular => (Mode & TypeMask) == 0x8000;
    /// <summary>A folder.</summary>
    public bool IsDirectory => (Mode & TypeMask) == 0x4000;
    /// <summary>A symbolic link (only seen when not followed).</summary>
    public bool IsSymlink => (Mode & TypeMask) == 0xA000;
    /// <summary>The same file as <paramref name="other"/> (same device and inode): one file under two names.</summary>
    public bool SameFileAs(FileIdentity other) => Device == other.Device && Inode == other.Inode;

    /// <summary>"a FIFO", "a character device", … for messages.</summary>
    public string Kind => (Mode & TypeMask) switch
    {
        0x8000 => "a regular file",
        0x4000 => "a folder",
        0xA000 => "a symbolic link",
        0x1000 => "a FIFO",
        0x2000 => "a character device",
        0x6000 => "a block device",
        0xC000 => "a socket",
        _ => "not a regular file",
    };
}
