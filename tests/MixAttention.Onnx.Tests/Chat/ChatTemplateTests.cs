using Microsoft.Extensions.AI;
using MixAttention.Onnx.Chat;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Chat;

/// <summary>
/// Chat templates rendered by @huggingface/jinja on Jint against renderings written out by hand from reading each
/// template (the bundled configs: graphs/demo's ChatML, the GPT-2 configs without a template), plus the Jinja features
/// real templates use (special tokens, raise_exception, filters, loop variables).
/// </summary>
[TestClass]
public sealed class ChatTemplateTests
{
    private static ChatMessage M(string role, string text) => new(new ChatRole(role), text);

    [TestMethod]
    public void DemoTokenizerConfigRendersItsChatMlTemplate()
    {
        var template = ChatTemplate.FromTokenizerConfig(Path.Combine(TestPaths.Graphs, "demo"));
        Assert.IsNotNull(template.Source);
        // The template adds a default system message when the first is not a system message.
        Assert.AreEqual(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
            template.Render([M("user", "Hello")]));
        Assert.AreEqual(
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi \"there\"\n<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n",
            template.Render([M("system", "Be brief."), M("user", "Hi \"there\"\n"), M("assistant", "Hello!"), M("user", "Bye")], addGenerationPrompt: false));
    }

    [TestMethod]
    public void Gpt2TokenizerConfigsHaveNoTemplateAndGetThePlainTranscript()
    {
        foreach (var dir in new[] { "gpt2-tokenizer", "gpt2-ortattention" })
        {
            var template = ChatTemplate.FromTokenizerConfig(Path.Combine(TestPaths.Graphs, dir));
            Assert.IsNull(template.Source, dir);
            Assert.AreEqual("system: Be brief.\nuser: Hello\nassistant:", template.Render([M("system", "Be brief."), M("user", "Hello")]), dir);
            Assert.AreEqual("user: Hello\n", template.Render([M("user", "Hello")], addGenerationPrompt: false), dir);
        }
    }

    [TestMethod]
    public void SpecialTokensFiltersAndLoopVariablesReachTheTemplate()
    {
        // Llama-2 style: bos_token, eos_token, loop.index0, the trim filter and raise_exception.
        const string llama2 = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
            "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
            "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] | trim + ' [/INST]' }}{% else %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}{% endif %}{% endfor %}";
        var template = ChatTemplate.FromString(llama2, new Dictionary<string, string> { ["bos_token"] = "<s>", ["eos_token"] = "</s>" });
        Assert.AreEqual("<s>[INST] Hi [/INST] Hello </s>[INST] Bye [/INST]",
            template.Render([M("user", "  Hi "), M("assistant", "Hello\n"), M("user", "Bye")]));
        var e = Assert.ThrowsExactly<MixAttentionException>(() => template.Render([M("assistant", "first")]));
        StringAssert.Contains(e.Message, "Conversation roles must alternate");
    }

    [TestMethod]
    public void TokenizerConfigWithNamedTemplatesTakesTheDefault()
    {
        var dir = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """
            {"eos_token": {"content": "<|end|>"}, "chat_template": [
              {"name": "tool_use", "template": "TOOLS"},
              {"name": "default", "template": "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"}]}
            """);
        Assert.AreEqual("<|user|>Hi<|end|><|assistant|>", ChatTemplate.FromTokenizerConfig(dir).Render([M("user", "Hi")]));
    }

    [TestMethod]
    public void BrokenTemplatesFailClearly()
    {
        var e = Assert.ThrowsExactly<MixAttentionException>(() => ChatTemplate.FromString("{% for m in messages %}{{ m.content }}"));
        StringAssert.Contains(e.Message, "chat template");
        var dir = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"chat_template": 42}""");
        Assert.ThrowsExactly<MixAttentionException>(() => ChatTemplate.FromTokenizerConfig(dir));
        // A template that never ends is stopped by the engine's time limit instead of hanging the server.
        var loop = ChatTemplate.FromString("{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}", null, TimeSpan.FromMilliseconds(300));
        Assert.ThrowsExactly<MixAttentionException>(() => loop.Render([M("user", "Hi")]));
    }
}
