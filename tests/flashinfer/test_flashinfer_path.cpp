// flashinfer-cuda (libfusecheck_flashinfer.so, loaded as the binary loads any plug-in)
// against emulated-cpu --recipe flashinfer on small random checkpoints with the shapes
// FlashInfer is instantiated for (head_dim 64 and 128), odd head counts, GQA groups 1 and
// 3, Qwen3 q/k norms, Qwen2 biases, interleaved RoPE, batch 3. Both round at the same
// points (the split-KV decode's bf16 chunk outputs included, in chunks of 256 keys: the
// H200's, decode.cuh:709-712); they differ by FP32 order and FlashInfer's approximate
// rsqrt/exp2/rcp (a 1-ulp flip on a small share of elements) and, at prefill, by
// FlashInfer's bf16 P (docs/recipes.md `flashinfer`: relative L2 below 4e-3 on attn and
// what follows it in the layer).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "harness/core/dtype.h"
#include "harness/core/path_registry.h"
#include "harness/paths/plugin_loader.h"
#include "kernels/common/device_info.h"
#include "reference/random_checkpoint.h"
#include "tests/common/path_agreement.h"
#include "tests/common/small_specs.h"

namespace fusecheck::test {
namespace {

// FlashInfer's instantiated head dims: qwen3 9 query heads over 3 kv heads of 64 (q/k norms),
// qwen2 head_dim 128 in groups of 2 (biases), llama 5 heads of 64 without GQA, interleaved
// pairs (GGUF order).
constexpr ShapePerArch kFlashInferShapes{
    .qwen3 = {.hidden = 200, .n_heads = 9, .n_kv_heads = 3, .head_dim = 64, .intermediate = 328},
    .qwen2 = {.hidden = 136, .n_heads = 4, .n_kv_heads = 2, .head_dim = 128, .intermediate = 232},
    .llama = {.hidden = 168, .n_heads = 5, .n_kv_heads = 5, .head_dim = 64, .intermediate = 256},
};

ModelSpec small_spec(const std::string& arch) {
  return two_layer_spec(arch, kFlashInferShapes, RopeStyle::Interleaved, "BF16");
}

void load_flashinfer() {
  register_builtin_paths();
  static const bool loaded = (load_plugin(FUSECHECK_FLASHINFER_PLUGIN), true);
  (void)loaded;
}

// Taps the attention output feeds within the layer (they inherit prefill's bf16 P).
bool after_attention(Tap t) {
  return t == Tap::attn || t == Tap::o_proj || t == Tap::resid_mid || t == Tap::mlp_norm || t == Tap::gate ||
         t == Tap::up || t == Tap::act || t == Tap::down || t == Tap::resid_out;
}

void expect_taps_agree(const TapSet& fi, const TapSet& emulated, bool prefill, const std::string& where) {
  // A layer exposes at least 10 taps, the head exactly 2 (final_norm, logits).
  const int min_taps = where.find(" head ") != std::string::npos ? 2 : 10;
  expect_taps_within(fi, emulated, where, min_taps, [prefill](Tap tap) -> TapLimits {
    // bf16 P: 2^-8 of the mass at most
    if (prefill && after_attention(tap)) return {.share_off = std::nullopt, .rel_l2 = 4e-3};
    // approximate rsqrt/exp2: rare 1-ulp flips
    return {.share_off = 0.01, .rel_l2 = 2e-3};
  });
}

class FlashInferPathAgreement : public ::testing::TestWithParam<std::string> {};

TEST_P(FlashInferPathAgreement, SmallPrefillAndDecodeMatchEmulatedFlashinferRecipe) {
  if (cuda::visible_device_count() == 0) GTEST_SKIP() << cuda::no_device_reason();
  load_flashinfer();
  const ModelSpec spec = small_spec(GetParam());
  ref::RandomCheckpoint ckpt(spec, 7, DType::BF16);
  PathOptions opts;
  auto fi = make_path("flashinfer-cuda", ckpt, opts);
  opts.recipe = "flashinfer";
  auto emulated = make_path("emulated-cpu", ckpt, opts);
  // A prefill of 13, two decode steps, a 2-token chunk over the cache, a long prefill
  // that takes the cache past 1025 (FlashInfer's split-KV decode), one more decode step.
  drive_isolated(*fi, *emulated, spec, {3, 1}, 1100, {13, 1, 1, 2, 1010, 1}, 11, GetParam(), expect_taps_agree);
}

INSTANTIATE_TEST_SUITE_P(SmallModels, FlashInferPathAgreement, ::testing::Values("qwen3", "qwen2", "llama"));

TEST(FlashInferPath, SmallTwoRunsAreBitwiseIdentical) {
  if (cuda::visible_device_count() == 0) GTEST_SKIP() << cuda::no_device_reason();
  load_flashinfer();
  const ModelSpec spec = small_spec("qwen3");
  ref::RandomCheckpoint ckpt(spec, 5, DType::BF16);
  auto fi = make_path("flashinfer-cuda", ckpt, PathOptions{});
  std::vector<TapSet> runs;
  for (int run = 0; run < 2; ++run) runs.push_back(last_taps_of_run(*fi, spec, 3, 400, {300, 1}));
  for (const auto& [tap, m] : runs[0]) EXPECT_TRUE(m == runs[1].at(tap)) << tap_name(tap) << " differs";
}

// A head dim FlashInfer was not instantiated for is refused at creation, naming the shape.
TEST(FlashInferPath, UnsupportedHeadDimIsRefusedAtCreationNamingTheShape) {
  if (cuda::visible_device_count() == 0) GTEST_SKIP() << cuda::no_device_reason();
  load_flashinfer();
  ModelSpec spec = small_spec("llama");
  spec.head_dim = 32, spec.rope_dim = 32;
  ref::RandomCheckpoint ckpt(spec, 3, DType::BF16);
  try {
    make_path("flashinfer-cuda", ckpt, PathOptions{});
    FAIL() << "head_dim 32 was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim 32"), std::string::npos) << e.what();
  }
}

// A GQA group FlashInfer's decode does not dispatch (5 here: 5 heads over 1 kv head) is
// refused at creation, naming the group, not thrown from inside the first decode step.
TEST(FlashInferPath, UnsupportedGqaGroupIsRefusedAtCreationNamingIt) {
  if (cuda::visible_device_count() == 0) GTEST_SKIP() << cuda::no_device_reason();
  load_flashinfer();
  ModelSpec spec = small_spec("llama");
  spec.n_heads = 5, spec.n_kv_heads = 1;
  ref::RandomCheckpoint ckpt(spec, 3, DType::BF16);
  try {
    make_path("flashinfer-cuda", ckpt, PathOptions{});
    FAIL() << "GQA group 5 was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("GQA group size 5"), std::string::npos) << e.what();
  }
}

// keep_taps() narrows what layer() returns, never the head: with the hint that decode's
// KV prefill gives (resid_out only) the head still returns final_norm and logits.
TEST(FlashInferPath, HeadReturnsLogitsWhateverKeepTapsSaid) {
  if (cuda::visible_device_count() == 0) GTEST_SKIP() << cuda::no_device_reason();
  load_flashinfer();
  const ModelSpec spec = small_spec("qwen3");
  ref::RandomCheckpoint ckpt(spec, 13, DType::BF16);
  auto fi = make_path("flashinfer-cuda", ckpt, PathOptions{});
  fi->reset(2, 16);
  fi->keep_taps(std::vector<Tap>{Tap::resid_out});
  std::mt19937_64 rng(17);
  std::uniform_int_distribution<int> tok(0, spec.vocab - 1);
  std::vector<std::int32_t> ids(2 * 5);
  for (auto& t : ids) t = tok(rng);
  TapMatrix h = fi->embed(ids);
  for (int l = 0; l < spec.n_layers; ++l) {
    const TapSet taps = fi->layer(l, h);
    EXPECT_EQ(taps.count(Tap::attn), 0u) << "keep_taps(resid_out) still downloaded attn";
    h = taps.at(Tap::resid_out);
  }
  const TapSet head = fi->head(h);
  ASSERT_EQ(head.count(Tap::logits), 1u) << "head returned no logits after keep_taps(resid_out)";
  EXPECT_EQ(head.at(Tap::logits).rows(), h.rows());
  EXPECT_EQ(head.at(Tap::logits).cols(), spec.vocab);
  EXPECT_EQ(head.count(Tap::final_norm), 1u);
}

TEST(FlashInferPath, TimeLayerSmallReportsEveryOpAndTheLayer) {
  if (cuda::visible_device_count() == 0) GTEST_SKIP() << cuda::no_device_reason();
  load_flashinfer();
  ref::RandomCheckpoint ckpt(small_spec("qwen3"), 9, DType::BF16);
  auto fi = make_path("flashinfer-cuda", ckpt, PathOptions{});
  fi->reset(3, 64);
  TimingOptions t;
  t.repetitions = 5;
  for (int n_new : {1, 9}) {
    const auto ops = fi->time_layer(0, n_new, 17, t);
    ASSERT_GE(ops.size(), 10u);
    EXPECT_EQ(ops.back().op, "layer");
    for (const auto& op : ops) EXPECT_GT(op.median_ms, 0) << op.op;
  }
}

}  // namespace
}  // namespace fusecheck::test
