namespace MixAttention.Onnx.Detection;

/// <summary>Something attention-like that no pattern could turn into a site, with the node(s) and the reason.</summary>
/// <param name="Node">Name (or description) of the node where matching stopped.</param>
/// <param name="Message">Why it is not a site.</param>
/// <param name="Blocking">
/// True when the issue means the model is not fully understood (a cache input or output no site explains, a layer
/// missing, a window that contradicts the config): <c>inspect</c> warns, <c>convert</c> refuses. False for nodes that
/// merely look like attention (a MoE router's Softmax).
/// </param>
public sealed record DetectionIssue(string Node, string Message, bool Blocking = false);
