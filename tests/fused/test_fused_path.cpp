// fused-cuda against emulated-cpu --recipe fused-v1 on small random checkpoints (odd head
// counts, GQA, Qwen3 q/k norms, Qwen2 biases, batch 3): both follow the same rounding
// points, so they may differ only by FP32 accumulation order. Such differences are
// ~1e-7 relative before a bf16 rounding and flip a rounding for a small share of elements
// (one ulp, 2^-8 relative); a misplaced rounding point changes a third or more of them.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "harness/core/dtype.h"
#include "harness/core/path_registry.h"
#include "kernels/common/device_info.h"
#include "reference/random_checkpoint.h"
#include "tests/common/path_agreement.h"
#include "tests/common/small_specs.h"

namespace fusecheck::test {
namespace {

// kOddShapes; llama in HF order (pairs split in halves).
ModelSpec tiny_spec(const std::string& arch) {
  return two_layer_spec(arch, kOddShapes, RopeStyle::NeoxHalfSplit, "BF16");
}

void expect_taps_agree(const TapSet& fused, const TapSet& emulated, const std::string& where) {
  expect_taps_within(fused, emulated, where, 2, [](Tap tap) -> TapLimits {
    const bool fp32_tap = tap == Tap::logits;  // not rounded by fused-v1
    return {.share_off = fp32_tap ? 1.0 : 0.01, .rel_l2 = fp32_tap ? 1e-5 : 2e-3};
  });
}

class FusedPathAgreement : public ::testing::TestWithParam<std::string> {};

TEST_P(FusedPathAgreement, SmallPrefillAndDecodeMatchEmulatedFusedV1) {
  if (cuda::visible_device_count() == 0) GTEST_SKIP() << cuda::no_device_reason();
  register_builtin_paths();
  const ModelSpec spec = tiny_spec(GetParam());
  ref::RandomCheckpoint ckpt(spec, 7, DType::BF16);
  PathOptions opts;
  auto fused = make_path("fused-cuda", ckpt, opts);
  opts.recipe = "fused-v1";
  auto emulated = make_path("emulated-cpu", ckpt, opts);

  // Per batch, four phases: a prefill of 13 tokens (GEMM route), two decode steps
  // (split-KV attention; batch 1: GEMV route, batch 3: GEMM route), then a 2-token chunk
  // (causal attention over a cache that already holds 15 positions; batch 1: GEMV route).
  // Isolated: both get the emulated input, so each layer's own agreement is measured.
  drive_isolated(*fused, *emulated, spec, {3, 1}, 64, {13, 1, 1, 2}, 11, GetParam(),
                 [](const TapSet& f, const TapSet& e, bool, const std::string& where) {
                   expect_taps_agree(f, e, where);
                 });
}

INSTANTIATE_TEST_SUITE_P(TinyModels, FusedPathAgreement,
                         ::testing::Values("qwen3", "qwen2", "llama"));

// Fixed reduction shapes everywhere (GEMV trees, split-KV chunks combined in order, the
// same cuBLASLt algorithm per shape): the same inputs give the same bits.
TEST(FusedPath, SmallTwoRunsAreBitwiseIdentical) {
  if (cuda::visible_device_count() == 0) GTEST_SKIP() << cuda::no_device_reason();
  register_builtin_paths();
  const ModelSpec spec = tiny_spec("qwen3");
  ref::RandomCheckpoint ckpt(spec, 5, DType::BF16);
  auto fused = make_path("fused-cuda", ckpt, PathOptions{});
  for (const int batch : {3, 1}) {  // GEMM route, then the GEMV route for the decode step
    std::vector<TapSet> runs;  // the last layer's taps of the last step
    for (int run = 0; run < 2; ++run) runs.push_back(last_taps_of_run(*fused, spec, batch, 80, {70, 1}));
    for (const auto& [tap, m] : runs[0])
      EXPECT_TRUE(m == runs[1].at(tap)) << "batch " << batch << ": " << tap_name(tap) << " differs";
  }
}

// fusecheck run keeps one instance per mode; they share one upload of the weights
// (shared_per_checkpoint) but not their caches. A second instance must give the same bits,
// and keep_taps must drop exactly the taps not asked for.
TEST(FusedPath, SmallSecondInstanceAgreesAndKeepTapsDownloadsOnlyThoseAsked) {
  if (cuda::visible_device_count() == 0) GTEST_SKIP() << cuda::no_device_reason();
  register_builtin_paths();
  const ModelSpec spec = tiny_spec("qwen3");
  ref::RandomCheckpoint ckpt(spec, 6, DType::BF16);
  auto all = make_path("fused-cuda", ckpt, PathOptions{});
  auto some = make_path("fused-cuda", ckpt, PathOptions{});
  some->keep_taps(std::vector<Tap>{Tap::attn});
  std::vector<std::int32_t> ids(2 * 9);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>((7 * i + 3) % spec.vocab);
  all->reset(2, 16);
  some->reset(2, 16);
  const TapMatrix h = all->embed(ids);
  const TapSet a = all->layer(0, h), b = some->layer(0, h);
  ASSERT_EQ(b.size(), 2u);  // attn and resid_out (always)
  EXPECT_TRUE(b.at(Tap::attn) == a.at(Tap::attn));
  EXPECT_TRUE(b.at(Tap::resid_out) == a.at(Tap::resid_out));
  EXPECT_GT(a.at(Tap::resid_out).norm(), 0.0);  // a real layer output, not an untouched buffer
  some->keep_taps(std::nullopt);
  EXPECT_EQ(some->layer(1, b.at(Tap::resid_out)).size(), a.size());
}

TEST(FusedPath, TimeLayerSmallReportsEveryOpAndTheGraph) {
  if (cuda::visible_device_count() == 0) GTEST_SKIP() << cuda::no_device_reason();
  register_builtin_paths();
  ref::RandomCheckpoint ckpt(tiny_spec("qwen3"), 9, DType::BF16);
  auto fused = make_path("fused-cuda", ckpt, PathOptions{});
  TimingOptions t;
  t.repetitions = 5;
  for (int n_new : {1, 9}) {  // decode (GEMV route) and a prefill chunk (GEMM route)
    const auto ops = fused->time_layer(0, n_new, 17, t);
    ASSERT_GE(ops.size(), 6u);
    EXPECT_EQ(ops.back().op, "layer(graph)");
    for (const auto& op : ops) {
      EXPECT_GT(op.median_ms, 0) << op.op;
      EXPECT_GT(op.bytes, 0) << op.op;
    }
  }
}

// Through the CUDA paths' plug-in (ABI 1.2 execution_traits), fused-cuda declares what the
// path itself declares: the switches its kernels read once per process and its decode
// attention's first split-KV edges (kDecodeMinChunk, then doubled), which invariance mode
// lists and cuts chunked prefills around.
TEST(FusedPath, ExecutionTraitsCrossThePluginAbi) {
  if (cuda::visible_device_count() == 0) GTEST_SKIP() << cuda::no_device_reason();
  register_builtin_paths();
  const ModelSpec spec = tiny_spec("qwen3");
  ref::RandomCheckpoint ckpt(spec, 5, DType::BF16);
  auto fused = make_path("fused-cuda", ckpt, PathOptions{});
  const ExecutionTraits t = fused->execution_traits(1, 128);
  EXPECT_EQ(t.switches, (std::vector<std::string>{"FUSECHECK_FUSED_PDL=0", "FUSECHECK_FUSED_ROPE_FOLD=0",
                                                  "FUSECHECK_FUSED_ROPE_FOLD=all", "FUSECHECK_GEMV_L2PF=0",
                                                  "FUSECHECK_PREFILL_PV_SPLIT=2"}));
  EXPECT_EQ(t.kv_split_boundaries, (std::vector<int>{32, 64}));
}

}  // namespace
}  // namespace fusecheck::test
