// The CUDA correctness checks of the com.mixattention ops as GoogleTests: every case of harness.cc's check (the CUDA
// op against the CPU op on the same inputs, in-place and copy binding, every dtype / head size / group / window /
// rotary variant) is one test, and the length guard is another. Built with the harness on a machine with nvcc
// (tools/gpu/CMakeLists.txt); tools/gpu/run.sh check runs it with the native GoogleTests.
//
//   harness_test MODELS_DIR LIBMIXATTENTION_OPS [gtest flags]
#define HARNESS_GTEST 1
#include "harness.cc"  // one source of truth for the cases and the comparison

#include <gtest/gtest.h>

namespace {

Models* g_models = nullptr;

class CudaOp : public ::testing::TestWithParam<Case> {};

TEST_P(CudaOp, MatchesTheCpuOp) {
  std::mt19937 rng(1234);
  bool ok = false;
  try {
    ok = RunCase(*g_models, GetParam(), "", rng, stdout);
  } catch (const Ort::Exception& e) {
    FAIL() << "ORT error: " << e.what();
  }
  EXPECT_TRUE(ok) << GetParam().name << ": the CUDA op differs from the CPU op (see the line above)";
}

INSTANTIATE_TEST_SUITE_P(Check, CudaOp, ::testing::ValuesIn(CheckCases(false)),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

TEST(CudaOpGuard, RejectsAStepPastAGlobalCachesCapacity) {
  EXPECT_TRUE(LengthGuardRejectsOverfullGlobalCache(*g_models));
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc < 3) {
    std::fprintf(stderr, "usage: harness_test MODELS_DIR LIBMIXATTENTION_OPS [gtest flags]\n");
    return 2;
  }
  const ReleaseEnvAtReturn release_env;  // before any ORT object, so destroyed after them
  GetEnv();
  Models models{argv[1], argv[2]};
  g_models = &models;
  return RUN_ALL_TESTS();
}
