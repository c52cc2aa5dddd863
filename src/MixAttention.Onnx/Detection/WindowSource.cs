namespace MixAttention.Onnx.Detection;

/// <summary>Where a layer's sliding window came from.</summary>
public enum WindowSource
{
    /// <summary>The layer attends to every earlier token.</summary>
    None,
    /// <summary>Stated by the graph itself (GQA <c>local_window_size</c>, a proven mask subgraph).</summary>
    Graph,
    /// <summary>From the Hugging Face <c>config.json</c> beside the model.</summary>
    HfConfig,
    /// <summary>From the <c>genai_config.json</c> beside the model.</summary>
    GenAiConfig,
    /// <summary>Given on the command line.</summary>
    CommandLine,
    /// <summary>The source keeps only the last W - 1 tokens in this layer's present cache (a Slice after the append).</summary>
    PresentCache,
}
