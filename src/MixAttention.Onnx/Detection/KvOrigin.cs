using MixAttention.Onnx.Onnx.Proto;

namespace MixAttention.Onnx.Detection;

/// <summary>Where a key/value entering attention comes from.</summary>
/// <param name="NewValue">This step's K or V, [B, Hkv, S, D] (before repeat_kv).</param>
/// <param name="PastInput">Graph input holding the past, or null without cache.</param>
/// <param name="PresentOutput">Graph output carrying past ++ new, or null.</param>
/// <param name="Concat">The appending Concat node, or null.</param>
/// <param name="PresentKeep">
/// Tokens the present output keeps when a Slice on the sequence axis sits between the append and the output
/// (transformers 5 keeps a sliding layer's cache at its window: the last W - 1 tokens); null when the present is
/// the whole concatenation.
/// </param>
internal sealed record KvOrigin(string NewValue, string? PastInput, string? PresentOutput, NodeProto? Concat, long? PresentKeep = null);
