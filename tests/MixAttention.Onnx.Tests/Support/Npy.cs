using System.Buffers.Binary;
using System.Text;
using System.Text.RegularExpressions;

namespace MixAttention.Onnx.Tests.Support;

/// <summary>Reads the little-endian C-order .npy files the fixture script writes (float32 and int64).</summary>
public static partial class Npy
{
    public static (long[] Shape, float[] Data) ReadFloat32(string path)
    {
        var (shape, descr, body) = Read(path);
        if (descr != "<f4") throw new InvalidDataException($"{path}: expected <f4, got {descr}");
        var data = new float[body.Length / 4];
        for (int i = 0; i < data.Length; i++) data[i] = BinaryPrimitives.ReadSingleLittleEndian(body.AsSpan(i * 4));
        return (shape, data);
    }

    public static (long[] Shape, long[] Data) ReadInt64(string path)
    {
        var (shape, descr, body) = Read(path);
        if (descr != "<i8") throw new InvalidDataException($"{path}: expected <i8, got {descr}");
        var data = new long[body.Length / 8];
        for (int i = 0; i < data.Length; i++) data[i] = BinaryPrimitives.ReadInt64LittleEndian(body.AsSpan(i * 8));
        return (shape, data);
    }

    private static (long[] Shape, string Descr, byte[] Body) Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length < 10 || bytes[0] != 0x93 || Encoding.ASCII.GetString(bytes, 1, 5) != "NUMPY")
            throw new InvalidDataException($"{path} is not a .npy file");
        int major = bytes[6];
        int headerLen = major == 1 ? BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(8)) : (int)BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(8));
        int start = major == 1 ? 10 : 12;
        var header = Encoding.ASCII.GetString(bytes, start, headerLen);
        var descr = DescrRegex().Match(header).Groups[1].Value;
        if (header.Contains("'fortran_order': True")) throw new InvalidDataException($"{path}: Fortran order not supported");
        var shape = ShapeRegex().Match(header).Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(long.Parse).ToArray();
        return (shape, descr, bytes[(start + headerLen)..]);
    }

    [GeneratedRegex(@"'descr':\s*'([^']+)'")]
    private static partial Regex DescrRegex();
    [GeneratedRegex(@"'shape':\s*\(([^)]*)\)")]
    private static partial Regex ShapeRegex();
}

/// <summary>The torch reference recorded at export time for a fixture: input ids [B, T] and logits [B, T, V].</summary>
public sealed record TorchReference(int Batch, int Length, int Vocab, long[] InputIds, float[] Logits)
{
    public static TorchReference For(string fixture) => ForDirectory(TestPaths.FixtureDir(fixture));

    /// <summary>The reference named by the provenance.json in <paramref name="dir"/>.</summary>
    public static TorchReference ForDirectory(string dir)
    {
        var provenance = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "provenance.json")))!;
        var refDir = Path.GetFullPath(Path.Combine(dir, provenance["reference"]!.GetValue<string>()));
        var (idShape, ids) = Npy.ReadInt64(Path.Combine(refDir, "input_ids.npy"));
        var (_, logits) = Npy.ReadFloat32(Path.Combine(refDir, "logits.npy"));
        int b = (int)idShape[0], t = (int)idShape[1];
        return new TorchReference(b, t, logits.Length / (b * t), ids, logits);
    }

    public float Logit(int b, int t, int v) => Logits[((long)b * Length + t) * Vocab + v];
}
