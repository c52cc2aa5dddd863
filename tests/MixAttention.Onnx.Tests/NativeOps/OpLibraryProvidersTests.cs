using MixAttention.Onnx.Runtime;
using MixAttention.Onnx.Runtime.Native;

namespace MixAttention.Onnx.Tests.NativeOps;

/// <summary>
/// The op library reports which execution providers it has kernels for, and a CUDA session of an ops model refuses a
/// CPU-only library instead of letting ORT run every attention node on the CPU (the test build is CPU-only).
/// </summary>
[TestClass]
public sealed class OpLibraryProvidersTests
{
    [TestMethod]
    public void TheTestBuildReportsCpuKernelsOnly()
    {
        var providers = OpLibraryProviders.Query(NativeLibraryPath.GetRequired());
        Assert.IsNotNull(providers, "libmixattention_ops.so does not export MixAttentionOpsExecutionProviders");
        CollectionAssert.AreEqual(new[] { "CPUExecutionProvider" }, providers.ToArray());
    }

    [TestMethod]
    public void ALibraryThatCannotBeLoadedReportsNothing()
    {
        Assert.IsNull(OpLibraryProviders.Query(Path.Combine(Path.GetTempPath(), "no-such-dir", "libmixattention_ops.so")));
    }

    [TestMethod]
    public void CudaIsRefusedWithACpuOnlyLibrary()
    {
        var e = Assert.ThrowsExactly<MixAttentionException>(() => MixAttentionModel.RequireCudaKernels("model.onnx", NativeLibraryPath.GetRequired()));
        StringAssert.Contains(e.Message, "built without CUDA kernels");
        StringAssert.Contains(e.Message, "CPUExecutionProvider");
        StringAssert.Contains(e.Message, "-DMIXATTN_CUDA=ON");
    }
}
