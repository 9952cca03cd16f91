// The fp8-kv recipes (docs/recipes.md, "fp8-kv") bit for bit: the KV cache holds
// e4m3(x / s) * s with s = amax / 448 from the prefill (static) or from every append
// (dynamic), per tensor or per kv head; attention reads exactly that. Clipping and
// flush-to-zero counts, bad scales, and the scale delivery check with its broken variant.
#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <string>

#include <gtest/gtest.h>

#include "harness/core/error.h"
#include "harness/core/fp8.h"
#include "reference/decoder_path.h"
#include "reference/kv_age.h"
#include "reference/random_checkpoint.h"
#include "tests/common/small_specs.h"
#include "tests/common/test_support.h"
#include "reference/scale_delivery.h"

namespace fusecheck::ref {
namespace {

ModelSpec spec() { return test::tiny_qwen3_tied_spec(); }

using MatF = Mat<float>;
MatF f32(const TapMatrix& m) { return m.cast<float>(); }

float amax(const MatF& m, Index col0, Index cols) {
  return m.middleCols(col0, cols).cwiseAbs().maxCoeff();
}

// What the cache reads back for x under scale s.
MatF fp8_cache(const MatF& x, Index col0, Index cols, float s) {
  MatF out = x;
  for (Index i = 0; i < x.rows(); ++i) {
    for (Index j = col0; j < col0 + cols; ++j) out(i, j) = round_to_e4m3(x(i, j) / s) * s;
  }
  return out;
}

// Layer 0's attention output rebuilt from its q_rope, k_rope and v taps with the given
// cache contents (FP32 attention, one bf16 rounding: fused-v1's K3).
MatF attention_from(const TapSet& taps, const MatF& k_cache, const MatF& v_cache) {
  NoRounding<float> none;
  const MatF q = f32(taps.at(Tap::q_rope));
  MatF out(q.rows(), spec().q_width());
  causal_gqa_attention<float>(q, k_cache, v_cache, k_cache.rows(), spec().n_heads, spec().n_kv_heads,
                              spec().head_dim, 1.0f / std::sqrt(16.0f), none, out);
  return out.unaryExpr([](float x) { return round_to_bf16(x); });
}

class Fp8Kv : public ::testing::Test {
 protected:
  RandomCheckpoint ckpt{spec(), 17, DType::BF16, 8.0};
  std::vector<std::int32_t> prompt = {3, 14, 15, 9, 26, 5, 35};

  TapSet prefill_layer0(EmulatedPath& p) {
    p.reset(1, 16);
    return p.layer(0, p.embed(prompt));
  }
};

TEST_F(Fp8Kv, StaticPerTensorCacheIsE4m3OfXOverAmaxOver448) {
  EmulatedPath p(ckpt, "emulated-cpu", &find_recipe("fp8-kv"));
  const TapSet t = prefill_layer0(p);
  const MatF k = f32(t.at(Tap::k_rope)), v = f32(t.at(Tap::v));
  const float sk = amax(k, 0, k.cols()) / kE4m3Max, sv = amax(v, 0, v.cols()) / kE4m3Max;
  ASSERT_GT(sk, 0);
  ASSERT_EQ(p.kv_fp8(0)->first.scales(), std::vector<float>{sk});
  ASSERT_EQ(p.kv_fp8(0)->second.scales(), std::vector<float>{sv});
  const MatF want = attention_from(t, fp8_cache(k, 0, k.cols(), sk), fp8_cache(v, 0, v.cols(), sv));
  EXPECT_EQ(f32(t.at(Tap::attn)), want);
  // And the FP8 cache is visible: the bf16 cache gives another output.
  EXPECT_NE(f32(t.at(Tap::attn)), attention_from(t, k, v));
}

TEST_F(Fp8Kv, PerHeadScalesComeFromEachKvHeadsAmax) {
  EmulatedPath p(ckpt, "emulated-cpu", &find_recipe("fp8-kv-per-head"));
  const TapSet t = prefill_layer0(p);
  MatF k = f32(t.at(Tap::k_rope)), v = f32(t.at(Tap::v));
  std::vector<float> sk, sv;
  for (Index h = 0; h < 2; ++h) {
    sk.push_back(amax(k, h * 16, 16) / kE4m3Max);
    sv.push_back(amax(v, h * 16, 16) / kE4m3Max);
    k = fp8_cache(k, h * 16, 16, sk.back());
    v = fp8_cache(v, h * 16, 16, sv.back());
  }
  EXPECT_EQ(p.kv_fp8(0)->first.scales(), sk);
  EXPECT_EQ(p.kv_fp8(0)->second.scales(), sv);
  EXPECT_NE(sk[0], sk[1]);
  EXPECT_EQ(f32(t.at(Tap::attn)), attention_from(t, k, v));
}

TEST_F(Fp8Kv, StaticScalesStayThoseOfThePrefill) {
  EmulatedPath p(ckpt, "emulated-cpu", &find_recipe("fp8-kv-per-head"));
  p.reset(1, 16);
  const TapMatrix h = p.embed(prompt);
  p.layer(0, h.topRows(3));
  const std::vector<float> calibrated = p.kv_fp8(0)->first.scales();
  for (Index step = 3; step < h.rows(); ++step) p.layer(0, h.middleRows(step, 1));
  EXPECT_EQ(p.kv_fp8(0)->first.scales(), calibrated);
  const KvFp8Stats& st = p.kv_fp8(0)->first.stats();
  EXPECT_EQ(st.n_values, h.rows() * 32);
  EXPECT_EQ(st.scale_min, *std::min_element(calibrated.begin(), calibrated.end()));
  EXPECT_EQ(st.scale_max, *std::max_element(calibrated.begin(), calibrated.end()));
  EXPECT_GE(st.headroom(), 1.0 - 1e-6) << "the prefill's amax sits at 448";
  // reset() forgets the calibration.
  p.reset(1, 16);
  EXPECT_EQ(p.kv_fp8(0), nullptr);
}

TEST_F(Fp8Kv, DynamicScalesFollowEveryAppendAndNeverClip) {
  EmulatedPath p(ckpt, "emulated-cpu", &find_recipe("fp8-kv-dynamic"));
  p.reset(1, 16);
  TapMatrix h = p.embed(prompt);
  const TapSet t0 = p.layer(0, h.topRows(3));
  const float s0 = p.kv_fp8(0)->first.scales()[0];
  const TapSet t1 = p.layer(0, h.middleRows(3, 1));
  const float s1 = p.kv_fp8(0)->first.scales()[0];
  EXPECT_EQ(s1, amax(f32(t1.at(Tap::k_rope)), 0, 32) / kE4m3Max);
  EXPECT_NE(s0, s1);
  EXPECT_EQ(p.kv_fp8(0)->first.stats().scale_min, std::min(s0, s1));
  EXPECT_EQ(p.kv_fp8(0)->first.stats().scale_max, std::max(s0, s1));
  EXPECT_EQ(p.kv_fp8(0)->first.stats().n_clipped, 0);
}

TEST(KvFp8Quantizer, CountsClippedAndFlushedValues) {
  KvFp8Quantizer q(KvCacheFp8{}, 1);
  MatF calib(1, 4);
  calib << 448.0f, -1.0f, 2.0f, 3.0f;  // scale 1
  q.append(calib, "test");
  EXPECT_EQ(q.scales(), std::vector<float>{1.0f});
  MatF later(1, 5);
  later << 465.0f, -1000.0f, 460.0f, 0x1p-11f, 0.0f;
  q.append(later, "test");
  EXPECT_EQ(later(0, 0), 448.0f);
  EXPECT_EQ(later(0, 1), -448.0f);
  EXPECT_EQ(later(0, 2), 448.0f);  // rounds to 448 as any value would: not clipped
  EXPECT_EQ(later(0, 3), 0.0f);
  EXPECT_EQ(q.stats().n_clipped, 2);
  EXPECT_EQ(q.stats().n_flushed, 1);  // the exact zero is not a flush
  EXPECT_EQ(q.stats().n_values, 9);
  EXPECT_DOUBLE_EQ(q.stats().max_abs_scaled, 1000.0);
}

TEST(KvFp8Quantizer, ZeroNanOrInfScaleIsAClearError) {
  for (float bad : {0.0f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    KvFp8Quantizer q(KvCacheFp8{.granularity = KvScaleGranularity::per_head}, 2);
    MatF rows = MatF::Constant(2, 8, 1.5f);
    rows.block(0, 4, 2, 4).setConstant(0.0f);
    rows(1, 5) = bad;
    try {
      q.append(rows, "layer 3 k_cache");
      ADD_FAILURE() << "no error for amax " << bad;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("layer 3 k_cache scale of kv head 1"), std::string::npos) << e.what();
    }
  }
}

TEST_F(Fp8Kv, ScaleDeliveryCheckPassesWhenScalesReachAttention) {
  for (const char* name : {"fp8-kv", "fp8-kv-per-head", "fp8-kv-dynamic", "fp8-kv-per-head-dynamic"}) {
    const ScaleDeliveryResult r = check_scale_delivery(ckpt, find_recipe(name), prompt, 6);
    ASSERT_EQ(r.rows.size(), std::size(kScaleDeliveryMultipliers));
    EXPECT_GT(r.fp8_rel_l2, 0) << name << ": the FP8 cache must change something";
    for (const auto& row : r.rows) {
      // Dynamic scales never clip; a static x1 may (here: one key of a decode step).
      if (std::string(name).find("dynamic") != std::string::npos) EXPECT_EQ(row.clipped, 0) << name;
      if (row.judged) EXPECT_LE(row.rel_l2, r.limit) << name << " x" << row.multiplier << " (fp8 " << r.fp8_rel_l2 << ")";
    }
    EXPECT_TRUE(r.passed()) << name;
    RecordProperty(std::string(name) + "_fp8_rel_l2", std::to_string(r.fp8_rel_l2));
    RecordProperty(std::string(name) + "_judged_rel_l2", std::to_string(r.worst_judged()));
  }
}

TEST_F(Fp8Kv, ScaleDeliveryCheckCatchesScalesThatNeverReachAttention) {
  Recipe broken = find_recipe("fp8-kv");
  broken.kv_fp8->drop_scale_on_load = true;
  const ScaleDeliveryResult r = check_scale_delivery(ckpt, broken, prompt, 6);
  EXPECT_FALSE(r.passed());
  EXPECT_FALSE(r.inconclusive());
  // The judged pair's dequantized values differ by 2x (the first rule compared x1 with x16,
  // 16x, and asserted 10x the limit): measured 0.22 against a limit of 0.023 here.
  EXPECT_GT(r.worst_judged(), 5 * r.limit) << "twice the reference multiplier against it";
  RecordProperty("broken_judged_rel_l2", std::to_string(r.worst_judged()));
  RecordProperty("limit", std::to_string(r.limit));
}

TEST_F(Fp8Kv, KvAgeErrorCountsEveryVisibleKeyOfEveryDecodeStep) {
  const int steps = 5;
  const KvAgeReport r = measure_kv_age_error(ckpt, find_recipe("fp8-kv"), prompt, steps);
  std::int64_t keys = 0;
  for (const auto& b : r.buckets) {
    keys += b.keys;
    EXPECT_EQ(b.rel_error_by_layer.size(), 2u);
    EXPECT_TRUE(std::isfinite(b.rel_error)) << b.lo;
    EXPECT_GT(b.rel_error, 0) << "ages " << b.lo << "-" << b.hi << ": the FP8 cache moves every bucket";
  }
  // Step s (0-based) sees prompt + s + 1 keys, for every query head of both layers.
  std::int64_t want = 0;
  for (int s = 0; s < steps; ++s) want += 2 * 4 * static_cast<std::int64_t>(prompt.size() + s + 1);
  EXPECT_EQ(keys, want);
  // Ages 0, 1, 2-3, 4-7, 8-15 for positions up to 11.
  ASSERT_EQ(r.buckets.size(), 5u);
  EXPECT_EQ(r.buckets[3].lo, 4);
  EXPECT_EQ(r.buckets[3].hi, 7);
}

TEST(ScaleDeliveryVerdict, ClippedRowsAreNotJudgedButSomeRowMustBe) {
  ScaleDeliveryResult r;
  r.limit = 1e-3;
  // x1 clipped (a static scale too small for later keys) and moved; x4 agrees with the x2
  // reference; x8 is shown only.
  r.reference_multiplier = 2;
  r.rows = {{1, 40, false, 5e-2}, {2, 0, false, 0}, {4, 0, true, 2e-4}, {8, 0, false, 9e-3}};
  EXPECT_TRUE(r.passed());
  EXPECT_EQ(r.worst_judged(), 2e-4);
  r.rows[2].rel_l2 = 5e-2;  // x4 moves although it clipped no more than the reference
  EXPECT_FALSE(r.passed());
  EXPECT_FALSE(r.inconclusive());
  r.rows[2].rel_l2 = std::numeric_limits<double>::quiet_NaN();  // NaN fails
  EXPECT_FALSE(r.passed());
  // Only x8 clips the fewest: nothing to judge.
  r.reference_multiplier = 8;
  r.rows = {{1, 40, false, 5e-2}, {2, 9, false, 1e-2}, {4, 3, false, 1e-2}, {8, 0, false, 0}};
  EXPECT_TRUE(r.inconclusive());
  EXPECT_FALSE(r.passed());
}

// The case the first rule (x1 and x4 against x16) failed: stories260K, the real-text prompt
// of scenarios/fp8/stories260k-cpu.yaml, 32 greedy steps. x16's own subnormal rounding
// moved it by 1.2e-2 against a limit of 8.8e-3 (fp8-kv-dynamic) although no scale was
// lost. Every recipe passes with the reference at the fewest-clipping multiplier and the
// run at twice it judged; the static ones clip at x1 (a headroom finding, not judged); the
// broken variant is caught by a wide margin.
TEST(ScaleDeliveryStories260K, RealTextPromptPassesEveryRecipeAndCatchesTheBrokenOne) {
  const auto dir = test::models_dir();
  if (!dir) GTEST_SKIP() << test::models_dir_skip_reason();
  const auto ckpt = Checkpoint::open(*dir / "stories260K.gguf");
  const std::vector<std::int32_t> prompt = {1, 403, 261, 280, 261, 343, 379, 346, 286, 261, 305, 263, 292, 273, 309, 430};
  for (const char* name : {"fp8-kv", "fp8-kv-per-head", "fp8-kv-dynamic", "fp8-kv-per-head-dynamic"}) {
    const ScaleDeliveryResult r = check_scale_delivery(*ckpt, find_recipe(name), prompt, 32);
    EXPECT_TRUE(r.passed()) << name << ": judged " << r.worst_judged() << " against " << r.limit;
    EXPECT_LE(r.worst_judged(), r.limit / 4) << name << ": the judged pair keeps a margin";
    const bool dynamic = std::string(name).find("dynamic") != std::string::npos;
    EXPECT_EQ(r.rows.front().clipped > 0, !dynamic) << name << ": static scales from the prefill clip later keys";
  }
  Recipe broken = find_recipe("fp8-kv");
  broken.kv_fp8->drop_scale_on_load = true;
  const ScaleDeliveryResult r = check_scale_delivery(*ckpt, broken, prompt, 32);
  EXPECT_FALSE(r.passed());
  EXPECT_GT(r.worst_judged(), 10 * r.limit);
}

}  // namespace
}  // namespace fusecheck::ref
