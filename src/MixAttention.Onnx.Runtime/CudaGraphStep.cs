using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MixAttention.Onnx.Lowering;

namespace MixAttention.Onnx.Runtime;

/// <summary>
/// The fixed buffers of a CUDA-graph decode step (<see cref="ModelOptions.CudaGraphDecode"/>): every step runs all
/// <c>MaxBatch</c> rows with one token each, over device-resident <c>input_ids [B, 1]</c>, <c>position_ids [B, 1]</c>,
/// <c>past_lengths [B]</c>, <c>new_lengths [B]</c> and <c>logits [B, 1, V]</c> and the whole caches, all bound once to
/// one <see cref="OrtIoBinding"/>, so their addresses and shapes never change between replays. Each step copies the
/// host staging tensors to the device, replays the graph (ORT captures it on its first runs with this graph id) and
/// copies the logits back.
/// <para>
/// Host ↔ device copies go through <see cref="OrtEnv.CopyTensors"/> when the environment has a data transfer for
/// CUDA; ORT's CUDA provider appended to session options does not register one in the environment, so the first
/// failure switches to <c>cudaMemcpy</c> of the CUDA runtime that the provider already loaded (<see cref="Transfer"/> says which).
/// </para>
/// </summary>
internal sealed class CudaGraphStep : IDisposable
{
    private readonly OrtIoBinding _binding;
    private readonly RunOptions _runOptions = new();
    private readonly List<OrtValue> _owned = new();
    private readonly OrtValue[] _hostInputs, _deviceInputs;
    private readonly OrtValue _deviceLogits, _hostLogits;
    private readonly long[]? _ids64, _pos64;
    private readonly int[]? _ids32, _pos32;
    private readonly int[] _past, _new;

    public CudaGraphStep(MixAttentionModel model, KvCacheSet caches, int maxBatch, int vocab, TensorElementType positionType, int graphId)
    {
        var plan = model.Plan!;
        MaxBatch = maxBatch;
        GraphId = graphId;
        _runOptions.AddRunConfigEntry("gpu_graph_id", graphId.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var allocator = model.DeviceAllocator()!;
        _past = new int[maxBatch];
        _new = new int[maxBatch];
        var hosts = new List<OrtValue>();
        var devices = new List<OrtValue>();
        _binding = model.OrtSession.CreateIoBinding();
        try
        {
            OrtValue Own(OrtValue v) { _owned.Add(v); return v; }
            void Input(string name, OrtValue host, TensorElementType type, long[] shape)
            {
                var device = Own(OrtValue.CreateAllocatedTensorValue(allocator, type, shape));
                hosts.Add(Own(host));
                devices.Add(device);
                _binding.BindInput(name, device);
            }
            long[] bs = { maxBatch, 1 };
            if (model.InputIdsType == TensorElementType.Int64)
                Input(plan.InputIds, OrtValue.CreateTensorValueFromMemory(_ids64 = new long[maxBatch], bs), TensorElementType.Int64, bs);
            else
                Input(plan.InputIds, OrtValue.CreateTensorValueFromMemory(_ids32 = new int[maxBatch], bs), TensorElementType.Int32, bs);
            if (plan.PositionIds is { } pos)
            {
                if (positionType == TensorElementType.Int64)
                    Input(pos, OrtValue.CreateTensorValueFromMemory(_pos64 = new long[maxBatch], bs), TensorElementType.Int64, bs);
                else
                    Input(pos, OrtValue.CreateTensorValueFromMemory(_pos32 = new int[maxBatch], bs), TensorElementType.Int32, bs);
            }
            Input(plan.PastLengths!, OrtValue.CreateTensorValueFromMemory(_past, new long[] { maxBatch }), TensorElementType.Int32, new long[] { maxBatch });
            Input(plan.NewLengths!, OrtValue.CreateTensorValueFromMemory(_new, new long[] { maxBatch }), TensorElementType.Int32, new long[] { maxBatch });
            caches.Bind(_binding, 0, maxBatch);
            long[] logitsShape = { maxBatch, 1, vocab };
            _deviceLogits = Own(OrtValue.CreateAllocatedTensorValue(allocator, model.LogitsType, logitsShape));
            _hostLogits = Own(OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, model.LogitsType, logitsShape));
            _binding.BindOutput(plan.Logits, _deviceLogits);
        }
        catch
        {
            Dispose();
            throw;
        }
        _hostInputs = hosts.ToArray();
        _deviceInputs = devices.ToArray();
    }

    /// <summary>Rows every step runs (the session's MaxBatch).</summary>
    public int MaxBatch { get; }
    /// <summary>The <c>gpu_graph_id</c> of this session's decode graph.</summary>
    public int GraphId { get; }
    /// <summary>How host ↔ device copies are made: "OrtEnv.CopyTensors" or "cudaMemcpy" (null before the first step).</summary>
    public string? Transfer { get; private set; }
    /// <summary>Steps run.</summary>
    public long Steps { get; private set; }

    /// <summary>
    /// One decode step over all rows: <paramref name="ids"/>, <paramref name="past"/>, <paramref name="news"/> are
    /// <c>MaxBatch</c> long (rows without a token: <c>news = 0</c>); positions are <c>past</c>. Returns the host logits
    /// <c>[MaxBatch, 1, V]</c>, valid until the next step.
    /// </summary>
    public OrtValue Run(InferenceSession session, long[] ids, int[] past, int[] news)
    {
        for (int r = 0; r < MaxBatch; r++)
        {
            if (_ids64 is not null) _ids64[r] = ids[r];
            else _ids32![r] = checked((int)ids[r]);
            if (_pos64 is not null) _pos64[r] = past[r];
            else if (_pos32 is not null) _pos32[r] = past[r];
            _past[r] = past[r];
            _new[r] = news[r];
        }
        Copy(_hostInputs, _deviceInputs, toDevice: true);
        session.RunWithBinding(_runOptions, _binding);
        Copy(new[] { _deviceLogits }, new[] { _hostLogits }, toDevice: false);
        Steps++;
        return _hostLogits;
    }

    private void Copy(OrtValue[] src, OrtValue[] dst, bool toDevice)
    {
        if (Transfer is null or "OrtEnv.CopyTensors")
        {
            try
            {
                OrtEnv.Instance().CopyTensors(src, dst, null);
                Transfer = "OrtEnv.CopyTensors";
                return;
            }
            catch (OnnxRuntimeException) when (Transfer is null)
            {
                Transfer = "cudaMemcpy";
            }
        }
        for (int i = 0; i < src.Length; i++) CudaRuntime.Copy(Address(dst[i], out long bytes), Address(src[i], out _), bytes, toDevice);
    }

    private static unsafe IntPtr Address(OrtValue value, out long bytes)
    {
        var span = value.GetTensorMutableRawData(); // only the address and length: device memory is never dereferenced here
        bytes = span.Length;
        return (IntPtr)Unsafe.AsPointer(ref MemoryMarshal.GetReference(span));
    }

    public void Dispose()
    {
        _binding.Dispose();
        foreach (var v in _owned) v.Dispose();
        _owned.Clear();
        _runOptions.Dispose();
    }
}

/// <summary>
/// <c>cudaMemcpy</c> from the CUDA runtime library ORT's CUDA provider loaded (found by its soname, so the same
/// library and context): the fallback for host ↔ device copies of the graph decode step.
/// </summary>
internal static class CudaRuntime
{
    private const int HostToDevice = 1, DeviceToHost = 2;
    private static readonly string[] Names = { "libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0", "libcudart.so", "cudart64_12.dll" };
    private static unsafe delegate* unmanaged<IntPtr, IntPtr, nuint, int, int> _memcpy;
    private static unsafe delegate* unmanaged<int> _synchronize;
    private static unsafe delegate* unmanaged<int> _profilerStart, _profilerStop;
    private static readonly Lock Gate = new();

    /// <summary><c>cudaProfilerStart</c> (<paramref name="start"/>) or <c>cudaProfilerStop</c>: bounds the capture range of a profiler run with <c>nsys --capture-range=cudaProfilerApi</c>.</summary>
    public static unsafe void Profiler(bool start)
    {
        Load();
        int e = start ? _profilerStart() : _profilerStop();
        if (e != 0) throw new MixAttentionException($"cudaProfiler{(start ? "Start" : "Stop")} failed with CUDA error {e}.");
    }

    /// <summary>Synchronous copy of <paramref name="bytes"/> bytes; host → device when <paramref name="toDevice"/>, else device → host.</summary>
    public static unsafe void Copy(IntPtr dst, IntPtr src, long bytes, bool toDevice)
    {
        Load();
        int e = _memcpy(dst, src, (nuint)bytes, toDevice ? HostToDevice : DeviceToHost);
        // From pageable memory the copy may still be in flight when cudaMemcpy returns; ORT's stream does not wait for the legacy stream.
        if (e == 0 && toDevice) e = _synchronize();
        if (e != 0) throw new MixAttentionException($"cudaMemcpy ({(toDevice ? "host to device" : "device to host")}, {bytes} bytes) failed with CUDA error {e}.");
    }

    private static unsafe void Load()
    {
        if (_memcpy != null) return;
        lock (Gate)
        {
            if (_memcpy != null) return;
            foreach (var name in Names)
            {
                if (!NativeLibrary.TryLoad(name, out var lib)) continue;
                if (!NativeLibrary.TryGetExport(lib, "cudaMemcpy", out var copy) || !NativeLibrary.TryGetExport(lib, "cudaDeviceSynchronize", out var sync)
                    || !NativeLibrary.TryGetExport(lib, "cudaProfilerStart", out var pStart) || !NativeLibrary.TryGetExport(lib, "cudaProfilerStop", out var pStop)) continue;
                _synchronize = (delegate* unmanaged<int>)sync;
                _profilerStart = (delegate* unmanaged<int>)pStart;
                _profilerStop = (delegate* unmanaged<int>)pStop;
                _memcpy = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, int>)copy;
                return;
            }
            throw new MixAttentionException($"No CUDA runtime library ({string.Join(", ", Names)}) could be loaded: CUDA-graph decode needs it for host ↔ device copies (OrtEnv.CopyTensors has no CUDA data transfer), profiler ranges for cudaProfilerStart/Stop.");
        }
    }
}

/// <summary>
/// A region of a CUDA profiler's capture (<c>nsys profile --capture-range=cudaProfilerApi</c>): <c>cudaProfilerStart</c>
/// when created, <c>cudaProfilerStop</c> when disposed, from the CUDA runtime ORT's CUDA provider loaded. Lets a
/// profile hold only the decode steps of a benchmark, not its model load and prefill.
/// </summary>
public sealed class CudaProfilerRange : IDisposable
{
    private bool _open;

    /// <summary>Starts the capture (cudaProfilerStart).</summary>
    /// <exception cref="MixAttentionException">No CUDA runtime library could be loaded, or the call failed.</exception>
    public CudaProfilerRange()
    {
        CudaRuntime.Profiler(start: true);
        _open = true;
    }

    /// <summary>Stops the capture (cudaProfilerStop); later calls do nothing.</summary>
    public void Dispose()
    {
        if (!_open) return;
        _open = false;
        CudaRuntime.Profiler(start: false);
    }
}
