// Which FP64 path a run's noise floor uses and what it costs in memory: ref64-cuda on
// cuda (FP32 weights widened a layer at a time into an FP64 scratch, FP64 KV caches and
// taps on the device, counted before the run starts), ref64-cpu on cpu; `fusecheck
// paths` lists ref64-cuda without loading CUDA.
#include <algorithm>

#include <gtest/gtest.h>

#include "harness/checkpoint/profiles.h"
#include "harness/core/error.h"
#include "harness/core/path_registry.h"
#include "harness/run/run_limits.h"
#include "harness/run/scenario.h"

namespace fusecheck::run {
namespace {

Scenario prefill(int len) {
  return parse_scenario("model: {synth: {profile: llama-tiny}}\nphase: {prefill: " + std::to_string(len) +
                            "}\npaths: [ref32-cpu]\n",
                        "ref64.yaml");
}

TEST(Ref64Device, CudaRunsUseRef64CudaAndCpuRunsRef64Cpu) {
  EXPECT_EQ(ref64_path_for("cuda"), "ref64-cuda");
  EXPECT_EQ(ref64_path_for("cpu"), "ref64-cpu");
}

TEST(Ref64Device, Ref64CudaIsRegisteredAsACudaPath) {
  register_builtin_paths();
  const PathInfo* info = find_path("ref64-cuda");
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->device, "cuda");
  EXPECT_TRUE(is_known_path_name("ref64-cuda"));
  EXPECT_EQ(path_dtype("ref64-cuda", ""), DType::F32) << "compared as a reference, like ref64-cpu";
}

TEST(Ref64Device, CudaEstimateCountsItsWeightsScratchCachesAndTapsOnTheDevice) {
  const int L = 3, n = 512;
  const ModelSpec s = profile_shape(synth_profile("llama-tiny"), L);
  const Scenario sc = prefill(n);
  const MemoryEstimate without = estimate_run_memory(sc, s, "cuda", false);
  const MemoryEstimate with = estimate_run_memory(sc, s, "cuda", true);
  EXPECT_EQ(with.instances, without.instances + 2) << "an isolated and a propagated ref64 instance";

  const double h = s.hidden, qw = s.q_width(), kw = s.kv_width(), im = s.intermediate, vocab = s.vocab;
  const double layer_params = 2 * h * qw + 2 * h * kw + 3 * h * im;
  const double params = L * layer_params + vocab * h * (s.tied_embeddings ? 1 : 2);
  // FP32 weights (exact for llama-tiny's bf16) and each instance's FP64 scratch: one
  // layer's matrices or a slice of lm_head, whichever is larger.
  const double scratch = std::max(layer_params, std::min(vocab * h, 16777216.0)) * 8;
  const double tap_width = 6 * h + 4 * qw + 4 * kw + 3 * im;
  const double per_instance = L * n * kw * 2 * 8    // FP64 K and V
                              + double(n) * n * 8   // attention scores (one head)
                              + (n * tap_width + n * vocab) * 8;  // FP64 taps and logits
  const double device_added = static_cast<double>(with.device_bytes) - static_cast<double>(without.device_bytes);
  EXPECT_NEAR(device_added, params * 4 + 2 * (per_instance + scratch), 64.0);
  // On the host only the doubles crossing the boundary grow: no KV cache there.
  const double host_added = static_cast<double>(with.host_bytes) - static_cast<double>(without.host_bytes);
  EXPECT_NEAR(host_added, 2 * (2 * n * h + 2 * n * tap_width + n * (h + vocab)) * 8, 64.0);
}

TEST(Ref64Device, CpuEstimateKeepsRef64OnTheHost) {
  const Scenario sc = prefill(256);
  const ModelSpec s = profile_shape(synth_profile("llama-tiny"), 2);
  const MemoryEstimate with = estimate_run_memory(sc, s, "cpu", true);
  EXPECT_EQ(with.device_bytes, 0u);
  EXPECT_GT(with.host_bytes, estimate_run_memory(sc, s, "cpu", false).host_bytes);
}

TEST(Ref64Device, CudaRefusalCountsRef64Cuda) {
  const ModelSpec s = profile_shape(synth_profile("llama-tiny"), 3);
  const Scenario sc = prefill(512);
  const MemoryEstimate without = estimate_run_memory(sc, s, "cuda", false);
  // A device that fits the run without the FP64 truth refuses it with ref64, naming both.
  MemoryLimits limits{0, "", without.device_bytes, "test device"};
  EXPECT_NO_THROW(check_run_size(sc, s, "llama-tiny", "cuda", false, limits));
  try {
    check_run_size(sc, s, "llama-tiny", "cuda", true, limits);
    ADD_FAILURE() << "no refusal";
  } catch (const InputError& e) {
    const std::string what = e.what();
    const MemoryEstimate with = estimate_run_memory(sc, s, "cuda", true);
    EXPECT_NE(what.find(format_bytes(with.device_bytes) + " of device memory"), std::string::npos) << what;
    EXPECT_NE(what.find("the device has " + format_bytes(without.device_bytes)), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace fusecheck::run
