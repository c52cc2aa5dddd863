using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace MixAttention.Onnx.Tests.NativeOps;

/// <summary>Runs a session on named float / int tensors and returns the outputs as float arrays.</summary>
internal static class OpRunner
{
    public sealed record Input(string Name, Array Data, long[] Shape);

    public static Input F(string name, float[] data, params long[] shape) => new(name, data, shape);
    public static Input H(string name, float[] data, params long[] shape) => new(name, data.Select(x => (Float16)x).ToArray(), shape);
    public static Input I(string name, int[] data) => new(name, data, [data.Length]);

    public static Dictionary<string, float[]> Run(InferenceSession session, params Input[] inputs)
    {
        var values = inputs.Select(Create).ToList();
        try
        {
            using var runOptions = new RunOptions();
            var outputNames = session.OutputNames;
            using var results = session.Run(runOptions, inputs.Select(i => i.Name).ToList(), values, outputNames);
            var map = new Dictionary<string, float[]>();
            for (int i = 0; i < outputNames.Count; i++) map[outputNames[i]] = ToFloats(results[i]);
            return map;
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    public static OrtValue Create(Input input) => input.Data switch
    {
        float[] f => OrtValue.CreateTensorValueFromMemory(f, input.Shape),
        Float16[] h => OrtValue.CreateTensorValueFromMemory(h, input.Shape),
        int[] i => OrtValue.CreateTensorValueFromMemory(i, input.Shape),
        _ => throw new ArgumentException($"unsupported data for {input.Name}"),
    };

    public static float[] ToFloats(OrtValue value) =>
        value.GetTensorTypeAndShape().ElementDataType == TensorElementType.Float16
            ? value.GetTensorDataAsSpan<Float16>().ToArray().Select(h => (float)h).ToArray()
            : value.GetTensorDataAsSpan<float>().ToArray();
}
