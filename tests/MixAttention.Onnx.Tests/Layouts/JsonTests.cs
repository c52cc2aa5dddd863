using MixAttention.Onnx.Layouts;
using static MixAttention.Onnx.Tests.Layouts.LayoutTestData;

namespace MixAttention.Onnx.Tests.Layouts;

[TestClass]
public sealed class JsonTests
{
    [TestMethod]
    public void Json_RoundTrips_WithPerLayerWindows()
    {
        var layout = LayoutParser.Parse("0_1s4096_1s2048_3s512_3s512_0", Ctx(6));
        var json = layout.ToJson();
        var again = LayoutParser.Parse(json, Ctx(6));
        Assert.IsTrue(layout.HasSameAssignments(again));
        Assert.AreEqual(LayoutOrigin.Json, again.Origin);
        StringAssert.Contains(json, "\"version\": 1");
        StringAssert.Contains(json, "{\"layer\": 2, \"kv\": 1, \"window\": 2048}");
    }

    [TestMethod]
    public void JsonFile_IsParsed_AndNamedAfterTheFile()
    {
        var path = Path.Combine(Path.GetTempPath(), $"layout-{Guid.NewGuid():N}.json");
        try
        {
            File.WriteAllText(path, """
                // hand-written layouts may carry comments
                {
                  "version": 1,
                  "layers": [
                    {"kv": 0, "window": 0},
                    {"kv": 1, "window": 1024},
                    {"layer": 2, "kv": 1, "window": 1024},
                  ]
                }
                """);
            var layout = LayoutParser.Parse(path, Ctx(3));
            Assert.AreEqual("0_1s_1s", layout.ToCompactString());
            Assert.AreEqual(Path.GetFileNameWithoutExtension(path), layout.Name);
            Assert.AreEqual(LayoutOrigin.JsonFile, layout.Origin);
            Assert.AreEqual(path, layout.Spec);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void Json_NameIsKept()
    {
        var layout = LayoutParser.Parse("""{"version":1,"name":"mine","layers":[{"kv":0,"window":0}]}""", Ctx(1));
        Assert.AreEqual("mine", layout.Name);
        Assert.AreEqual("mine", LayoutJson.Read(layout.ToJson()).Name);
    }

    [TestMethod]
    [DataRow("""{"layers":[{"kv":0,"window":0}]}""", "missing \"version\": 1")]
    [DataRow("""{"version":2,"layers":[{"kv":0,"window":0}]}""", "unsupported \"version\" 2")]
    [DataRow("""{"version":1}""", "missing \"layers\"")]
    [DataRow("""{"version":1,"layers":[]}""", "\"layers\" is empty")]
    [DataRow("""{"version":1,"layers":{}}""", "\"layers\" must be an array")]
    [DataRow("""{"version":1,"layers":[{"kv":0,"window":0}],"extra":1}""", "unknown property \"extra\"")]
    [DataRow("""{"version":1,"layers":[{"kv":0}]}""", "layers[0]: missing \"window\"")]
    [DataRow("""{"version":1,"layers":[{"window":0}]}""", "layers[0]: missing \"kv\"")]
    [DataRow("""{"version":1,"layers":[{"kv":0,"window":0,"sliding":true}]}""", "layers[0]: unknown property \"sliding\"")]
    [DataRow("""{"version":1,"layers":[{"kv":"0","window":0}]}""", "\"kv\" must be an integer")]
    [DataRow("""{"version":1,"layers":[{"kv":0.5,"window":0}]}""", "\"kv\" must be an integer")]
    [DataRow("""{"version":1,"layers":[{"layer":3,"kv":0,"window":0}]}""", "must be 0")]
    [DataRow("""{"version":1,"layers":[1]}""", "layers[0] must be an object")]
    [DataRow("""{"version":1,"layers":[{"kv":0,"window":0}]""", "not valid JSON")]
    [DataRow("""{"version":1,"name":5,"layers":[{"kv":0,"window":0}]}""", "\"name\" must be a string")]
    public void MalformedJson_IsRejectedClearly(string json, string fragment)
    {
        Throws(() => LayoutParser.Parse(json, Ctx(1)), LayoutRule.MalformedJson, "layout JSON", fragment);
    }

    [TestMethod]
    public void Json_NegativeWindow_IsAnInvalidWindow()
    {
        Throws(() => LayoutParser.Parse("""{"version":1,"layers":[{"kv":0,"window":-1}]}""", Ctx(1)), LayoutRule.InvalidWindow,
            "layers[0]", "negative");
    }

    [TestMethod]
    public void Json_IsValidatedAgainstTheModel()
    {
        Throws(() => LayoutParser.Parse("""{"version":1,"layers":[{"kv":0,"window":0},{"kv":0,"window":64}]}""", Ctx(2)),
            LayoutRule.KindMismatch, "layer 1 is sliding (window 64) but reads layer 0, a global owner");
        Throws(() => LayoutParser.Parse("""{"version":1,"layers":[{"kv":0,"window":0}]}""", Ctx(2)),
            LayoutRule.LayerCount, "has 1 layer but the model has 2");
    }
}
