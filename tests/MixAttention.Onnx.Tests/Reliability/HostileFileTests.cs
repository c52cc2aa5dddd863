using System.Diagnostics;
using System.Runtime.InteropServices;
using Google.Protobuf;
using MixAttention.Onnx.Conversion;
using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Onnx.Proto;
using MixAttention.Onnx.Tests.Support;

namespace MixAttention.Onnx.Tests.Reliability;

/// <summary>
/// Files and paths as a hostile user or model folder would set them up (issue 22 cases 2–5 and 7): links out of the
/// model folder, FIFOs and devices, outputs that are inputs under another name, existing outputs that name files to
/// delete, side files that are links or folders. Built here with real links, FIFOs and device nodes.
/// </summary>
[TestClass]
public sealed class HostileFileTests
{
    [DllImport("libc", SetLastError = true)]
    private static extern int mkfifo(string path, uint mode);

    [DllImport("libc", SetLastError = true)]
    private static extern int mknod(string path, uint mode, ulong dev);

    [DllImport("libc")]
    private static extern uint geteuid();

    private static void Fifo(string path)
    {
        if (!OperatingSystem.IsLinux()) Assert.Inconclusive("FIFOs are made with Linux mkfifo here.");
        Assert.AreEqual(0, mkfifo(path, 0x1B6), $"mkfifo {path}: errno {Marshal.GetLastPInvokeError()}");
    }

    private static void Link(string path, string target)
    {
        try { File.CreateSymbolicLink(path, target); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or PlatformNotSupportedException) { Assert.Inconclusive($"cannot make symbolic links here: {e.Message}"); }
    }

    /// <summary>A folder with m.onnx (llama-gqa) whose weights live in m.onnx.data; returns the model path.</summary>
    private static string WithExternalData(string dir, string name = "m.onnx")
    {
        var path = Path.Combine(dir, name);
        OnnxModel.Load(TestPaths.Fixture("llama-gqa")).Save(path, new OnnxSaveOptions { ExternalizeAtLeastBytes = 1024 });
        return path;
    }

    /// <summary>Points every external tensor of <paramref name="model"/> at <paramref name="location"/> (offsets kept; length dropped when asked).</summary>
    private static void Relocate(string model, string location, bool dropLength = false)
    {
        var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(model));
        foreach (var t in ExternalDataRef.AllTensors(proto))
            if (ExternalDataRef.Of(t) is { } r) (r with { Location = location, Length = dropLength ? null : r.Length }).ApplyTo(t);
        File.WriteAllBytes(model, proto.ToByteArray());
    }

    private static ConversionOptions Options(bool force = false, bool link = true) => new() { Layout = "native", Force = force, LinkWeights = link };

    /// <summary>Runs <paramref name="action"/> with a deadline: a FIFO must be refused, not read forever.</summary>
    private static Exception Refused(Action action, int seconds = 60)
    {
        var task = Task.Run(() =>
        {
            try { action(); return null; }
            catch (Exception e) { return e; }
        });
        Assert.IsTrue(task.Wait(TimeSpan.FromSeconds(seconds)), "it hangs (blocked on a FIFO or reading a device)");
        Assert.IsNotNull(task.Result, "it was not refused");
        Assert.IsInstanceOfType<MixAttentionException>(task.Result, task.Result.ToString());
        return task.Result;
    }

    // ---- case 2: external data escaping through links ----

    [TestMethod]
    public void ExternalDataThroughALinkedFolderIsRefused()
    {
        var dir = TestPaths.TempDir();
        var outside = TestPaths.TempDir();
        var model = WithExternalData(dir);
        File.Move(model + ".data", Path.Combine(outside, "secret.bin"));
        Link(Path.Combine(dir, "sub"), outside);
        Relocate(model, "sub/secret.bin");
        var e = Refused(() => OnnxModel.Load(model));
        StringAssert.Contains(e.Message, "outside");
        // And convert never copies the outside file into its output.
        Refused(() => Converter.Convert(model, Path.Combine(dir, "out.onnx"), Options()));
        Assert.IsFalse(File.Exists(Path.Combine(dir, "out.onnx.data")));
        // Trusted explicitly, it loads.
        OnnxModel.Load(model, new OnnxLoadOptions { AllowExternalDataOutsideModelFolder = true });
    }

    [TestMethod]
    public void ExternalDataFileLinkedOutsideIsRefused()
    {
        var dir = TestPaths.TempDir();
        var outside = TestPaths.TempDir();
        var model = WithExternalData(dir);
        File.Move(model + ".data", Path.Combine(outside, "secret.bin"));
        Link(Path.Combine(dir, "w.bin"), Path.Combine(outside, "secret.bin"));
        Relocate(model, "w.bin");
        StringAssert.Contains(Refused(() => OnnxModel.Load(model)).Message, "outside");
        Refused(() => Converter.Convert(model, Path.Combine(dir, "out.onnx"), Options()));
        Assert.IsFalse(File.Exists(Path.Combine(dir, "out.onnx")));
    }

    [TestMethod]
    public void ExternalDataLinkedInsideTheFolderLoads()
    {
        var dir = TestPaths.TempDir();
        var model = WithExternalData(dir);
        Link(Path.Combine(dir, "w.bin"), "m.onnx.data");
        Relocate(model, "w.bin");
        var loaded = OnnxModel.Load(model);
        Assert.IsTrue(loaded.ExternalTensors().Any());
    }

    // ---- case 7: FIFOs and devices ----

    [TestMethod]
    public void ExternalDataFifoIsRefusedWithoutHanging()
    {
        var dir = TestPaths.TempDir();
        var model = WithExternalData(dir);
        Fifo(Path.Combine(dir, "pipe"));
        Relocate(model, "pipe", dropLength: true);
        StringAssert.Contains(Refused(() => OnnxModel.Load(model)).Message, "FIFO");
        Refused(() => Converter.Convert(model, Path.Combine(dir, "out.onnx"), Options(link: false)));
        Refused(() => Converter.Convert(model, Path.Combine(dir, "out2.onnx"), Options(link: true)));
    }

    [TestMethod]
    public void ExternalDataOnADeviceIsRefused()
    {
        if (!File.Exists("/dev/zero")) Assert.Inconclusive("no /dev/zero");
        var dir = TestPaths.TempDir();
        var model = WithExternalData(dir);
        Link(Path.Combine(dir, "zero"), "/dev/zero");
        Relocate(model, "zero", dropLength: true);
        StringAssert.Contains(Refused(() => OnnxModel.Load(model)).Message, "outside");
        Relocate(model, "/dev/zero", dropLength: true);
        var trusted = new OnnxLoadOptions { AllowExternalDataOutsideModelFolder = true };
        StringAssert.Contains(Refused(() => OnnxModel.Load(model, trusted)).Message, "character device");
        Refused(() => Converter.Convert(model, Path.Combine(dir, "out.onnx"), Options(link: false) with { Load = trusted }));
    }

    [TestMethod]
    public void ConfigJsonFifoOrDeviceIsRefusedWithoutHanging()
    {
        var dir = TestPaths.TempDir();
        var model = Path.Combine(dir, "model.onnx");
        File.Copy(TestPaths.Fixture("llama-gqa"), model);
        Fifo(Path.Combine(dir, "config.json"));
        StringAssert.Contains(Refused(() => Converter.Convert(model, Path.Combine(dir, "out.onnx"), Options())).Message, "FIFO");
        File.Delete(Path.Combine(dir, "config.json"));
        if (File.Exists("/dev/zero"))
        {
            Link(Path.Combine(dir, "config.json"), "/dev/zero");
            Refused(() => Converter.Convert(model, Path.Combine(dir, "out.onnx"), Options()));
        }
        Assert.IsFalse(File.Exists(Path.Combine(dir, "out.onnx")));
    }

    [TestMethod]
    public void ModelFileFifoIsRefusedWithoutHanging()
    {
        var dir = TestPaths.TempDir();
        Fifo(Path.Combine(dir, "model.onnx"));
        Refused(() => OnnxModel.Load(Path.Combine(dir, "model.onnx")));
    }

    // ---- case 3: --force never overwrites an input or a device ----

    [TestMethod]
    public void OutputThroughALinkedFolderIsNotTheInput()
    {
        var dir = TestPaths.TempDir();
        var model = WithExternalData(dir, "model.onnx");
        Link(Path.Combine(dir, "again"), dir);
        var before = File.ReadAllBytes(model);
        var data = File.ReadAllBytes(model + ".data");
        StringAssert.Contains(Refused(() => Converter.Convert(model, Path.Combine(dir, "again", "model.onnx"), Options(force: true))).Message, "input");
        CollectionAssert.AreEqual(before, File.ReadAllBytes(model));
        CollectionAssert.AreEqual(data, File.ReadAllBytes(model + ".data"));
    }

    [TestMethod]
    public void OutputThroughProcSelfCwdIsNotTheInput()
    {
        if (!Directory.Exists("/proc/self")) Assert.Inconclusive("no /proc");
        var dir = TestPaths.TempDir();
        var model = WithExternalData(dir, "model.onnx");
        var before = File.ReadAllBytes(model);
        var (code, err) = Cli(dir, "convert", "model.onnx", "-o", "/proc/self/cwd/model.onnx", "--force");
        Assert.AreEqual(2, code, err);
        CollectionAssert.AreEqual(before, File.ReadAllBytes(model));
        Assert.IsTrue(File.Exists(model + ".data"), "the input's data was deleted");
    }

    [TestMethod]
    public void OutputOnTheInputsDataIsRefused()
    {
        var dir = TestPaths.TempDir();
        var model = WithExternalData(dir, "model.onnx");
        var data = File.ReadAllBytes(model + ".data");
        Refused(() => Converter.Convert(model, model + ".data", Options(force: true)));
        CollectionAssert.AreEqual(data, File.ReadAllBytes(model + ".data"));
        OnnxModel.Load(model);
    }

    [TestMethod]
    public void OutputOnADeviceNodeIsRefused()
    {
        if (!OperatingSystem.IsLinux() || geteuid() != 0) Assert.Inconclusive("making a device node needs root on Linux");
        var dir = TestPaths.TempDir();
        var device = Path.Combine(dir, "null");
        // A character device like /dev/null (1, 3), made here so a failure never touches the real one.
        if (mknod(device, 0x2000 | 0x1B6, (1UL << 8) | 3) != 0) Assert.Inconclusive($"mknod: errno {Marshal.GetLastPInvokeError()}");
        StringAssert.Contains(Refused(() => Converter.Convert(TestPaths.Fixture("llama-gqa"), device, Options(force: true))).Message, "character device");
        Assert.AreEqual("a character device", SafeFiles.Stat(device, follow: false)!.Value.Kind);
    }

    [TestMethod]
    public void OutputOnAnExistingFolderIsRefused()
    {
        var dir = TestPaths.TempDir();
        var target = Path.Combine(dir, "existing_directory");
        Directory.CreateDirectory(target);
        var (code, err) = Cli(dir, "convert", TestPaths.Fixture("llama-gqa"), "-o", target, "--force");
        Assert.AreEqual(2, code, err);
        Assert.IsFalse(File.Exists(target + ".data"));
        Assert.IsTrue(Directory.Exists(target));
        Assert.IsEmpty(Directory.GetFiles(dir));
    }

    [TestMethod]
    public void OutputThatIsALinkIsRefused()
    {
        var dir = TestPaths.TempDir();
        var victim = Path.Combine(TestPaths.TempDir(), "victim.txt");
        File.WriteAllText(victim, "keep");
        Link(Path.Combine(dir, "out.onnx"), victim);
        Refused(() => Converter.Convert(TestPaths.Fixture("llama-gqa"), Path.Combine(dir, "out.onnx"), Options(force: true)));
        Assert.AreEqual("keep", File.ReadAllText(victim));
        Assert.IsTrue(SafeFiles.Stat(Path.Combine(dir, "out.onnx"), follow: false)!.Value.IsSymlink);
    }

    // ---- case 4: --force deletes only data files this tool wrote ----

    [TestMethod]
    public void ForceDeletesOnlyDataFilesThisToolWrote()
    {
        var dir = TestPaths.TempDir();
        var input = Path.Combine(dir, "in.onnx");
        File.Copy(TestPaths.Fixture("llama-gqa"), input);
        File.WriteAllText(Path.Combine(dir, "notes.txt"), "notes");
        var output = Path.Combine(dir, "out.onnx");
        // An existing output (another tool's, or hostile) whose external data names the input, itself and notes.txt.
        var hostile = OnnxModel.Load(TestPaths.Fixture("llama-gqa")).Proto.Clone();
        var tensors = ExternalDataRef.AllTensors(hostile).Where(t => t.RawData.Length > 0).Take(3).ToList();
        string[] names = { "in.onnx", "out.onnx", "notes.txt" };
        for (int i = 0; i < tensors.Count; i++) new ExternalDataRef(names[i], 0, 4).ApplyTo(tensors[i]);
        hostile.MetadataProps.Add(new StringStringEntryProto { Key = OnnxModel.WrittenDataKey, Value = "[\"in.onnx\",\"out.onnx\",\"notes.txt\"]" });
        File.WriteAllBytes(output, hostile.ToByteArray());

        Converter.Convert(input, output, Options(force: true));
        Assert.IsTrue(File.Exists(input), "the input was deleted");
        Assert.AreEqual("notes", File.ReadAllText(Path.Combine(dir, "notes.txt")));
        OnnxModel.Load(output);
    }

    [TestMethod]
    public void ForceReplacesItsOwnDataFiles()
    {
        var dir = TestPaths.TempDir();
        var input = WithExternalData(TestPaths.TempDir(), "in.onnx");
        var output = Path.Combine(dir, "out.onnx");
        Converter.Convert(input, output, Options(link: false));
        Converter.Convert(input, output, Options(force: true, link: false));
        Converter.Convert(input, output, Options(force: true, link: true));
        var data = Directory.GetFiles(dir, "*.data");
        Assert.HasCount(1, data, string.Join(", ", data));
        OnnxModel.Load(output);
        Assert.IsEmpty(Directory.GetFiles(dir, "*.tmp"));
    }

    // ---- case 5: side files ----

    [TestMethod]
    public void InputsGenAiConfigIsNeverRewritten()
    {
        var dir = TestPaths.TempDir();
        foreach (var f in new[] { "model.onnx", "config.json", "genai_config.json" })
            File.Copy(Path.Combine(TestPaths.FixtureDir("llama-gqa"), f), Path.Combine(dir, f));
        var before = File.ReadAllBytes(Path.Combine(dir, "genai_config.json"));
        Converter.Convert(Path.Combine(dir, "model.onnx"), Path.Combine(dir, "converted.onnx"), Options(force: true));
        CollectionAssert.AreEqual(before, File.ReadAllBytes(Path.Combine(dir, "genai_config.json")));
    }

    [TestMethod]
    public void AnotherModelsSideFilesNeedForce()
    {
        var dir = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(dir, "config.json"), "{\"other\":1}");
        File.WriteAllText(Path.Combine(dir, "genai_config.json"), "{\"other\":2}");
        var output = Path.Combine(dir, "model.onnx");
        StringAssert.Contains(Refused(() => Converter.Convert(TestPaths.Fixture("llama-gqa"), output, Options())).Message, "--force");
        Assert.AreEqual("{\"other\":1}", File.ReadAllText(Path.Combine(dir, "config.json")));
        Assert.AreEqual("{\"other\":2}", File.ReadAllText(Path.Combine(dir, "genai_config.json")));
        Assert.IsFalse(File.Exists(output), "the model was published although its side files were refused");
        Converter.Convert(TestPaths.Fixture("llama-gqa"), output, Options(force: true));
        StringAssert.Contains(File.ReadAllText(Path.Combine(dir, "genai_config.json")), "model.onnx");
    }

    [TestMethod]
    public void SideFileLinkedOutsideIsNeverWrittenThrough()
    {
        var dir = TestPaths.TempDir();
        var victim = Path.Combine(TestPaths.TempDir(), "victim.json");
        File.WriteAllText(victim, "{\"keep\":true}");
        Link(Path.Combine(dir, "config.json"), victim);
        Refused(() => Converter.Convert(TestPaths.Fixture("llama-gqa"), Path.Combine(dir, "model.onnx"), Options(force: true)));
        Assert.AreEqual("{\"keep\":true}", File.ReadAllText(victim));
        Assert.IsFalse(File.Exists(Path.Combine(dir, "model.onnx")));
    }

    [TestMethod]
    public void SideFileThatIsAFolderPublishesNothing()
    {
        var dir = TestPaths.TempDir();
        Directory.CreateDirectory(Path.Combine(dir, "genai_config.json"));
        var (code, err) = Cli(dir, "convert", TestPaths.Fixture("llama-gqa"), "-o", "model.onnx", "--force");
        Assert.AreEqual(2, code, err);
        Assert.HasCount(1, err.Split('\n', StringSplitOptions.RemoveEmptyEntries), err);
        Assert.IsEmpty(Directory.GetFiles(dir), string.Join(", ", Directory.GetFiles(dir)));
    }

    /// <summary>Runs mixattn in <paramref name="cwd"/>; returns the exit code and stderr.</summary>
    internal static (int Code, string Err) Cli(string cwd, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = cwd };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "mixattn.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(120_000)) { p.Kill(true); Assert.Fail("mixattn hangs"); }
        return (p.ExitCode, stderr.Result);
    }
}

/// <summary>Memory bombs and type errors in the files beside a model (issue 22 cases 6 and 9).</summary>
[TestClass]
public sealed class HostileSideFileContentTests
{
    private static string TokenizerCopy(Func<string, string> edit)
    {
        var dir = TestPaths.TempDir();
        var demo = Path.Combine(TestPaths.Graphs, "demo");
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), edit(File.ReadAllText(Path.Combine(demo, "tokenizer.json"))));
        File.Copy(Path.Combine(demo, "tokenizer_config.json"), Path.Combine(dir, "tokenizer_config.json"));
        return dir;
    }

    /// <summary>One vocab id of 300,000,000 made Tokenizer allocate 300 million strings (23.7 GB before the OOM killer). Now refused up front.</summary>
    [TestMethod]
    public void HugeTokenIdIsRefusedWithoutAllocating()
    {
        var dir = TokenizerCopy(text =>
        {
            var json = System.Text.Json.Nodes.JsonNode.Parse(text)!;
            var vocab = json["model"]!["vocab"]!.AsObject();
            var first = vocab.First().Key;
            vocab[first] = 300_000_000;
            return json.ToJsonString();
        });
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.ThrowsExactly<MixAttentionException>(() => MixAttention.Onnx.Runtime.OrtExtensionsTokenizer.FromDirectory(dir));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        StringAssert.Contains(e.Message, "300000000");
        Assert.IsLessThan(512L << 20, allocated, $"allocated {allocated:N0} bytes");
    }

    [TestMethod]
    [DataRow("\"model\": {", "\"model\": {\"vocab\": [1, 2], \"x\": {")]
    [DataRow("\"added_tokens\": [", "\"added_tokens\": [{\"id\": \"seven\", \"content\": 3},")]
    public void TokenizerTypeErrorsAreUserErrors(string find, string replace)
    {
        var dir = TokenizerCopy(text =>
        {
            var compact = System.Text.Json.Nodes.JsonNode.Parse(text)!.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
            Assert.Contains(find, compact);
            return compact.Replace(find, replace);
        });
        Assert.ThrowsExactly<MixAttentionException>(() => MixAttention.Onnx.Runtime.OrtExtensionsTokenizer.FromDirectory(dir));
    }

    [TestMethod]
    public void TokenizerFifoIsRefusedWithoutHanging()
    {
        if (!OperatingSystem.IsLinux()) Assert.Inconclusive("Linux only");
        var dir = TokenizerCopy(t => t);
        File.Delete(Path.Combine(dir, "tokenizer.json"));
        var p = Process.Start("mkfifo", Path.Combine(dir, "tokenizer.json"));
        p.WaitForExit();
        Assert.AreEqual(0, p.ExitCode);
        var task = Task.Run(() => Assert.Throws<MixAttentionException>(() => MixAttention.Onnx.Runtime.OrtExtensionsTokenizer.FromDirectory(dir)));
        Assert.IsTrue(task.Wait(TimeSpan.FromSeconds(60)), "hangs on the FIFO");
        task.GetAwaiter().GetResult();
    }

    /// <summary>config.json / genai_config.json with values of the wrong JSON type: a clean conversion or a MixAttentionException, never InvalidOperationException (exit 3).</summary>
    [TestMethod]
    [DataRow("config.json", "{\"sliding_window\": 4, \"layer_types\": [1, {\"a\": 2}], \"num_hidden_layers\": \"two\"}")]
    [DataRow("config.json", "{\"sliding_window\": 1e300, \"sliding_window_pattern\": [2]}")]
    [DataRow("genai_config.json", "{\"model\": [1, 2]}")]
    [DataRow("genai_config.json", "{\"model\": {\"decoder\": {\"sliding_window\": {\"window_size\": 4, \"layers\": [\"0\", null]}, \"inputs\": 5}}}")]
    [DataRow("config.json", "[1, 2]")]
    public void ConfigTypeErrorsAreNeverInternalErrors(string file, string content)
    {
        var dir = TestPaths.TempDir();
        File.Copy(TestPaths.Fixture("llama-gqa"), Path.Combine(dir, "model.onnx"));
        File.WriteAllText(Path.Combine(dir, file), content);
        try { Converter.Convert(Path.Combine(dir, "model.onnx"), Path.Combine(dir, "out.onnx"), new ConversionOptions { Layout = "native" }); }
        catch (MixAttentionException) { }
    }
}

/// <summary>The runtime refuses what the converter refuses before ORT (whose check is lexical) reads a byte.</summary>
[TestClass]
public sealed class HostileRuntimeFileTests
{
    [TestMethod]
    public void OpenRefusesExternalDataLinkedOutside()
    {
        var dir = TestPaths.TempDir();
        var outside = TestPaths.TempDir();
        var model = Path.Combine(dir, "m.onnx");
        OnnxModel.Load(TestPaths.Fixture("llama-gqa")).Save(model, new OnnxSaveOptions { ExternalizeAtLeastBytes = 1024 });
        File.Move(model + ".data", Path.Combine(outside, "secret.bin"));
        try { File.CreateSymbolicLink(Path.Combine(dir, "sub"), outside); }
        catch (IOException io) { Assert.Inconclusive(io.Message); }
        var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(model));
        foreach (var t in ExternalDataRef.AllTensors(proto))
            if (ExternalDataRef.Of(t) is { } r) (r with { Location = "sub/secret.bin" }).ApplyTo(t);
        File.WriteAllBytes(model, proto.ToByteArray());
        var e = Assert.Throws<MixAttentionException>(() => MixAttention.Onnx.Runtime.MixAttentionModel.Open(model));
        StringAssert.Contains(e.Message, "outside");
    }
}

/// <summary>A layout file named on the command line that is a FIFO is refused, not read forever.</summary>
[TestClass]
public sealed class HostileLayoutFileTests
{
    [TestMethod]
    public void LayoutFifoIsRefusedWithoutHanging()
    {
        if (!OperatingSystem.IsLinux()) Assert.Inconclusive("Linux only");
        var fifo = Path.Combine(TestPaths.TempDir(), "layout.json");
        using (var p = Process.Start("mkfifo", fifo)) { p.WaitForExit(); Assert.AreEqual(0, p.ExitCode); }
        var task = Task.Run(() => Assert.Throws<MixAttentionException>(() =>
            Converter.Convert(TestPaths.Fixture("llama-gqa"), Path.Combine(TestPaths.TempDir(), "out.onnx"), new ConversionOptions { Layout = fifo })));
        Assert.IsTrue(task.Wait(TimeSpan.FromSeconds(60)), "hangs on the FIFO");
        StringAssert.Contains(task.GetAwaiter().GetResult().Message, "FIFO");
    }
}
