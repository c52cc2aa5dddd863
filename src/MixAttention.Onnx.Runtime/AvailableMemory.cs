using System.Globalization;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// Memory a new allocation can take now, for the default cache limit: on the host what the kernel reports as available
/// (<c>MemAvailable</c>), bounded by the container's cgroup limit less its usage and by the .NET runtime's own limit;
/// on a CUDA device its free memory.
/// The machine's total memory is the wrong bound: a plan that asks for it would push the machine into swap or the
/// out-of-memory killer before the check refuses it.
/// </summary>
internal static class AvailableMemory
{
    /// <summary>Bytes of host memory available now (long.MaxValue when nothing can be read).</summary>
    public static long HostBytes()
    {
        long best = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        if (best <= 0) best = long.MaxValue;
        if (MemInfoKiB("MemAvailable") is { } kib && kib < long.MaxValue / 1024)
            best = Math.Min(best, kib * 1024);
        // cgroup v2, then v1: the limit less what the group already uses.
        if (Number("/sys/fs/cgroup/memory.max") is { } max && Number("/sys/fs/cgroup/memory.current") is { } used)
            best = Math.Min(best, Math.Max(0, max - used));
        else if (Number("/sys/fs/cgroup/memory/memory.limit_in_bytes") is { } max1 && Number("/sys/fs/cgroup/memory/memory.usage_in_bytes") is { } used1)
            best = Math.Min(best, Math.Max(0, max1 - used1));
        return best;
    }

    private delegate int GetDeviceFn(out int device);
    private delegate int SetDeviceFn(int device);
    private delegate int MemGetInfoFn(out nuint free, out nuint total);

    /// <summary>
    /// Free memory on CUDA device <paramref name="device"/> now (<c>cudaMemGetInfo</c> of the CUDA runtime ORT loaded),
    /// or null when the CUDA runtime cannot be asked. The calling thread's current device is restored.
    /// </summary>
    public static long? DeviceFreeBytes(int device)
    {
        foreach (var name in new[] { "libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0", "libcudart.so" })
        {
            if (!System.Runtime.InteropServices.NativeLibrary.TryLoad(name, out var lib)) continue;
            if (!System.Runtime.InteropServices.NativeLibrary.TryGetExport(lib, "cudaGetDevice", out var get)
                || !System.Runtime.InteropServices.NativeLibrary.TryGetExport(lib, "cudaSetDevice", out var set)
                || !System.Runtime.InteropServices.NativeLibrary.TryGetExport(lib, "cudaMemGetInfo", out var info))
                continue;
            var getDevice = System.Runtime.InteropServices.Marshal.GetDelegateForFunctionPointer<GetDeviceFn>(get);
            var setDevice = System.Runtime.InteropServices.Marshal.GetDelegateForFunctionPointer<SetDeviceFn>(set);
            var memGetInfo = System.Runtime.InteropServices.Marshal.GetDelegateForFunctionPointer<MemGetInfoFn>(info);
            if (getDevice(out int previous) != 0) return null;
            try
            {
                if (previous != device && setDevice(device) != 0) return null;
                return memGetInfo(out var free, out _) == 0 && free <= long.MaxValue ? (long)free : null;
            }
            finally
            {
                if (previous != device) setDevice(previous);
            }
        }
        return null;
    }

    private static long? MemInfoKiB(string key)
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
                if (line.StartsWith(key + ":", StringComparison.Ordinal))
                {
                    var parts = line[(key.Length + 1)..].Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries);
                    return parts.Length > 0 && long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var v) ? v : null;
                }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>A number in a cgroup file; null for "max", a missing file or anything else.</summary>
    private static long? Number(string path)
    {
        try
        {
            if (!File.Exists(path)) return null;
            var text = File.ReadAllText(path).Trim();
            return long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var v) ? v : null;
        }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }
}
