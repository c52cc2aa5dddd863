using System.Reflection;
using Jint;
using Jint.Native;
using Jint.Runtime;

namespace MixAttention.Onnx.Chat;

/// <summary>
/// One compiled chat template: @huggingface/jinja (embedded, ThirdParty/huggingface-jinja) running on Jint. A Jint
/// engine serves one thread at a time, so renders take a lock; templates are small and render in well under a millisecond
/// once compiled. Templates come from model folders (untrusted): each render runs under a time, memory and recursion limit.
/// </summary>
internal sealed class JinjaEngine
{
    private const string Host = """
        import { Template } from "jinja";
        export function compile(source) { return new Template(source); }
        export function render(template, json) { return template.render(JSON.parse(json)); }
        """;

    // Parsed once per process (115 KB of JavaScript), shared by every engine.
    private static readonly Lazy<Prepared<Acornima.Ast.Module>> Library = new(() =>
    {
        using var stream = typeof(JinjaEngine).Assembly.GetManifestResourceStream("huggingface-jinja.js")
            ?? throw new InvalidOperationException("the embedded resource huggingface-jinja.js is missing from MixAttention.Onnx.Chat.");
        using var reader = new StreamReader(stream);
        return Engine.PrepareModule(reader.ReadToEnd(), "huggingface-jinja.js");
    });

    private readonly Lock _lock = new();
    private readonly Engine _engine;
    private readonly JsValue _render;
    private readonly JsValue _template;

    /// <summary>How long one render may run by default.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(5);

    public JinjaEngine(string source, TimeSpan timeout)
    {
        _engine = new Engine(o => o.TimeoutInterval(timeout).LimitMemory(256L << 20).LimitRecursion(512));
        var library = Library.Value;
        _engine.Modules.Add("jinja", builder => builder.AddModule(library));
        _engine.Modules.Add("host", Host);
        var host = _engine.Modules.Import("host");
        _render = host.Get("render");
        try
        {
            _template = _engine.Invoke(host.Get("compile"), source);
        }
        catch (Exception e) when (e is JavaScriptException or ExecutionCanceledException or MemoryLimitExceededException or RecursionDepthOverflowException or TimeoutException)
        {
            throw new MixAttentionException($"the chat template does not parse: {Describe(e)}", e);
        }
    }

    /// <summary>Renders with a context given as a JSON object (messages, add_generation_prompt, special tokens).</summary>
    public string Render(string contextJson)
    {
        lock (_lock)
        {
            try
            {
                var result = _engine.Invoke(_render, _template, contextJson);
                return result.IsString() ? result.AsString() : result.ToString();
            }
            catch (Exception e) when (e is JavaScriptException or ExecutionCanceledException or MemoryLimitExceededException or RecursionDepthOverflowException or TimeoutException)
            {
                throw new MixAttentionException($"the chat template failed on these messages: {Describe(e)}", e);
            }
        }
    }

    /// <summary>The engine's message without JavaScript's "Error: " prefix (raise_exception throws an Error).</summary>
    private static string Describe(Exception e) => e.Message.StartsWith("Error: ", StringComparison.Ordinal) ? e.Message["Error: ".Length..] : e.Message;


}
