// fused-cuda against emulated-cpu --recipe fused-v1 on small random checkpoints (odd head
// counts, GQA, Qwen3 q/k norms, Qwen2 biases, batch 3): both follow the same rounding
// points, so they may differ only by FP32 accumulation order. Such differences are
// ~1e-7 relative before a bf16 rounding and flip a rounding for a small share of elements
// (one ulp, 2^-8 relative); a misplaced rounding point changes a third or more of them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "harness/core/dtype.h"
#include "harness/core/path_registry.h"
#include "kernels/common/device_info.h"
#include "reference/random_checkpoint.h"

namespace fusecheck::test {
namespace {

ModelSpec tiny_spec(const std::string& arch) {
  ModelSpec s;
  s.architecture = arch;
  s.source_format = "hf-safetensors";
  s.n_layers = 2;
  s.vocab = 97;
  s.rms_eps = 1e-6;
  s.rope_theta = 1e6;
  if (arch == "qwen3") {  // 5 query heads over 1 kv head, q/k norms
    s.hidden = 80; s.n_heads = 5; s.n_kv_heads = 1; s.head_dim = 16; s.intermediate = 136;
    s.has_qk_norm = true;
  } else if (arch == "qwen2") {  // biases
    s.hidden = 64; s.n_heads = 4; s.n_kv_heads = 2; s.head_dim = 16; s.intermediate = 120;
    s.has_qkv_bias = true;
  } else {  // llama: 9 heads over 3 kv heads, head_dim 8, eps 1e-5
    s.hidden = 72; s.n_heads = 9; s.n_kv_heads = 3; s.head_dim = 8; s.intermediate = 200;
    s.rms_eps = 1e-5; s.rope_theta = 10000;
  }
  s.rope_dim = s.head_dim;
  s.max_position = 4096;
  s.dtype = "BF16";
  return s;
}

// Share of elements more than one bf16 ulp apart, and relative L2 distance.
struct TapDistance {
  double share_off = 0, rel_l2 = 0;
};
TapDistance distance(const TapMatrix& a, const TapMatrix& b) {
  TapDistance d;
  double num = 0, den = 0;
  long off = 0;
  for (Eigen::Index i = 0; i < a.size(); ++i) {
    const double x = a.data()[i], y = b.data()[i];
    num += (x - y) * (x - y);
    den += y * y;
    const double ulp = std::ldexp(1.0, std::ilogb(std::max(std::fabs(y), 1e-30)) - 7);
    off += !(std::fabs(x - y) <= 1.01 * ulp);
  }
  d.share_off = static_cast<double>(off) / a.size();
  d.rel_l2 = den > 0 ? std::sqrt(num / den) : (num > 0 ? 1 : 0);
  return d;
}

void expect_taps_agree(const TapSet& fused, const TapSet& emulated, const std::string& where) {
  int compared = 0;
  for (const auto& [tap, m] : fused) {
    auto it = emulated.find(tap);
    if (it == emulated.end()) continue;
    ASSERT_EQ(m.rows(), it->second.rows()) << where << " " << tap_name(tap);
    ASSERT_EQ(m.cols(), it->second.cols()) << where << " " << tap_name(tap);
    ASSERT_TRUE(m.allFinite()) << where << " " << tap_name(tap) << " has NaN/Inf";
    const TapDistance d = distance(m, it->second);
    const bool fp32_tap = tap == Tap::logits;  // not rounded by fused-v1
    EXPECT_LE(d.share_off, fp32_tap ? 1.0 : 0.01) << where << " " << tap_name(tap);
    EXPECT_LE(d.rel_l2, fp32_tap ? 1e-5 : 2e-3) << where << " " << tap_name(tap);
    ++compared;
  }
  EXPECT_GE(compared, 2) << where << ": too few common taps";
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
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<int> tok(0, spec.vocab - 1);
  for (const int batch : {3, 1}) {
    fused->reset(batch, 64);
    emulated->reset(batch, 64);
    for (int n : {13, 1, 1, 2}) {
      std::vector<std::int32_t> ids(batch * n);
      for (auto& t : ids) t = tok(rng);
      const TapMatrix x = emulated->embed(ids);
      ASSERT_TRUE(fused->embed(ids) == x) << "embeddings differ";
      TapMatrix h = x;
      for (int l = 0; l < spec.n_layers; ++l) {
        // Isolated: both get the emulated input, so each layer's own agreement is measured.
        const TapSet f = fused->layer(l, h), e = emulated->layer(l, h);
        expect_taps_agree(f, e, GetParam() + " batch " + std::to_string(batch) + " n=" + std::to_string(n) + " layer " + std::to_string(l));
        h = e.at(Tap::resid_out);
      }
      expect_taps_agree(fused->head(h), emulated->head(h), GetParam() + " head n=" + std::to_string(n));
    }
  }
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
    std::vector<TapSet> runs;
    for (int run = 0; run < 2; ++run) {
      fused->reset(batch, 80);
      TapSet all;
      std::mt19937_64 rng(21);
      std::uniform_int_distribution<int> tok(0, spec.vocab - 1);
      for (int n : {70, 1}) {
        std::vector<std::int32_t> ids(batch * n);
        for (auto& t : ids) t = tok(rng);
        TapMatrix h = fused->embed(ids);
        for (int l = 0; l < spec.n_layers; ++l) {
          TapSet taps = fused->layer(l, h);
          h = taps.at(Tap::resid_out);
          for (auto& [tap, m] : taps) all[tap] = m;  // last layer's taps of the last step
        }
      }
      runs.push_back(std::move(all));
    }
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

}  // namespace
}  // namespace fusecheck::test
