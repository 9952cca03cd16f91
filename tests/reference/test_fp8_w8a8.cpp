// The fp8-w8a8 recipe (docs/recipes.md, "fp8-w8a8"): E4M3 rows with amax / 448 scales on
// hand-computed cases (ties to even, flush to zero, the zero-row floor, bad input), the
// scaled FP8 GEMM a_scale * (w_scale * acc) on small integers, and the emulated path's
// wiring: every layer GEMM through it, lm_head not, counts per GEMM in the headroom report.
#include <cmath>
#include <limits>
#include <string>

#include <gtest/gtest.h>

#include "harness/core/error.h"
#include "harness/core/fp8.h"
#include "reference/decoder_path.h"
#include "reference/random_checkpoint.h"
#include "reference/w8a8.h"
#include "tests/common/small_specs.h"

namespace fusecheck::ref {
namespace {

using MatF = Mat<float>;

TEST(Fp8Rows, ScaleIsRowAmaxOver448AndValuesRoundToNearestEven) {
  MatF m(2, 4);
  // Row 0: amax 448 (scale 1): 19 and -17 are ties in [16, 32) (quantum 2): 20 and -16
  // have the even significands. Row 1: amax 896 (scale 2): 114 / 2 = 57 in [32, 64)
  // (quantum 4) rounds to 56.
  m << 448.0f, 19.0f, -17.0f, 3.0f,
       896.0f, 114.0f, -1.0f, 0.0f;
  Fp8Stats st;
  const std::vector<float> s = quantize_rows_e4m3(m, st, "test");
  EXPECT_EQ(s, (std::vector<float>{1.0f, 2.0f}));
  MatF want(2, 4);
  want << 448.0f, 20.0f, -16.0f, 3.0f,
          448.0f, 56.0f, -0.5f, 0.0f;
  EXPECT_EQ(m, want);
  EXPECT_EQ(st.n_values, 8);
  EXPECT_EQ(st.n_clipped, 0);
  EXPECT_EQ(st.n_flushed, 0);
  EXPECT_DOUBLE_EQ(st.max_abs_scaled, 448.0);
  EXPECT_EQ(st.scale_min, 1.0);
  EXPECT_EQ(st.scale_max, 2.0);
}

TEST(Fp8Rows, ValuesBelowHalfTheSmallestSubnormalFlushAndAreCounted) {
  MatF m(1, 4);
  // Scale 1; the smallest subnormal is 2^-9: 0.46 of it flushes, 0.51 of it rounds up.
  m << 448.0f, 0.46f * 0x1p-9f, -0.51f * 0x1p-9f, 0.0f;
  Fp8Stats st;
  quantize_rows_e4m3(m, st, "test");
  EXPECT_EQ(m(0, 1), 0.0f);
  EXPECT_EQ(m(0, 2), -0x1p-9f);
  EXPECT_EQ(st.n_flushed, 1) << "the exact zero is not a flush";
}

TEST(Fp8Rows, AnAllZeroRowGetsTheFloorScaleNotADivisionByZero) {
  MatF m = MatF::Zero(1, 3);
  Fp8Stats st;
  const std::vector<float> s = quantize_rows_e4m3(m, st, "test");
  EXPECT_EQ(s[0], kFp8MinRowScale);
  EXPECT_EQ(m, MatF::Zero(1, 3));
}

TEST(Fp8Rows, NanOrInfIsAClearErrorNamingTheRow) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    MatF m = MatF::Constant(3, 2, 1.5f);
    m(2, 1) = bad;
    Fp8Stats st;
    try {
      quantize_rows_e4m3(m, st, "layer 4 gate input");
      ADD_FAILURE() << "no error for " << bad;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("layer 4 gate input row 2"), std::string::npos) << e.what();
    }
  }
}

TEST(Fp8ScaledGemm, IsActivationScaleTimesWeightScaleTimesTheE4m3Dot) {
  // Input row amax 448 (scale 1): [448, 20, -16] after rounding. Weight rows: amax 896
  // (scale 2): [448, 1, 3]; amax 224 (scale 1/2): [448, 112, 0] (114 rounds to 112).
  MatF in(1, 3);
  in << 448.0f, 19.0f, -17.0f;
  MatF w(2, 3);
  w << 896.0f, 2.0f, 6.0f,
       224.0f, 57.0f, 0.0f;
  Fp8Stats wst, ist;
  const std::vector<float> w_scale = quantize_rows_e4m3(w, wst, "w");
  const MatF y = fp8_scaled_gemm(in, w, w_scale, ist, "in");
  // 1 * (2 * (448*448 + 20*1 - 16*3)) and 1 * (0.5 * (448*448 + 20*112)): exact in FP32.
  ASSERT_EQ(y.rows(), 1);
  EXPECT_EQ(y(0, 0), 401352.0f);
  EXPECT_EQ(y(0, 1), 101472.0f);
  EXPECT_EQ(ist.n_values, 3);
}

class Fp8W8a8Path : public ::testing::Test {
 protected:
  ModelSpec spec = test::tiny_qwen3_tied_spec();
  RandomCheckpoint ckpt{spec, 23, DType::BF16, 8.0};
  std::vector<std::int32_t> prompt = {3, 14, 15, 9, 26, 5, 35};
};

// The q tap rebuilt from the attn_norm tap and the checkpoint's wq (bf16-stored: the
// recipe's weight rounding is exact), through the FP8 GEMM and one bf16 rounding.
TEST_F(Fp8W8a8Path, LayerGemmsAreFp8OnPerChannelWeightsAndPerTokenInputs) {
  EmulatedPath p(ckpt, "emulated-cpu", &find_recipe("fp8-w8a8"));
  p.reset(1, 16);
  const TapSet t = p.layer(0, p.embed(prompt));
  const TensorView& wq_view = *ckpt.model().layers[0].wq;
  MatF wq(spec.q_width(), spec.hidden);
  wq_view.to_float(std::span<float>(wq.data(), static_cast<std::size_t>(wq.size())));
  const MatF plain_q = (t.at(Tap::attn_norm).cast<float>() * wq.transpose())
                           .unaryExpr([](float x) { return round_to_bf16(x); });
  Fp8Stats wst, ist;
  const std::vector<float> w_scale = quantize_rows_e4m3(wq, wst, "wq");
  const MatF want = fp8_scaled_gemm(t.at(Tap::attn_norm).cast<float>(), wq, w_scale, ist, "q")
                        .unaryExpr([](float x) { return round_to_bf16(x); });
  EXPECT_EQ(t.at(Tap::q).cast<float>(), want);
  EXPECT_NE(want, plain_q) << "the FP8 GEMM must be visible against the bf16 one";
}

TEST_F(Fp8W8a8Path, HeadroomReportCountsWeightsAndInputsPerGemmAndTheFp8Cache) {
  EmulatedPath p(ckpt, "emulated-cpu", &find_recipe("fp8-w8a8"));
  p.reset(1, 16);
  const TapMatrix h = p.embed(prompt);
  p.layer(0, h);
  const auto report = p.headroom(0);
  const std::int64_t n = static_cast<std::int64_t>(prompt.size());
  struct Gemm {
    const char* name;
    std::int64_t out, in;
  };
  for (const Gemm g : {Gemm{"q", spec.q_width(), spec.hidden}, Gemm{"k", spec.kv_width(), spec.hidden},
                       Gemm{"v", spec.kv_width(), spec.hidden}, Gemm{"o_proj", spec.hidden, spec.q_width()},
                       Gemm{"gate", spec.intermediate, spec.hidden}, Gemm{"up", spec.intermediate, spec.hidden},
                       Gemm{"down", spec.hidden, spec.intermediate}}) {
    const std::string name = g.name;
    ASSERT_TRUE(report.count(name + ".weight.fp8")) << name;
    ASSERT_TRUE(report.count(name + ".input.fp8")) << name;
    const Headroom& w = report.at(name + ".weight.fp8");
    const Headroom& a = report.at(name + ".input.fp8");
    EXPECT_EQ(w.n_values, g.out * g.in) << name;
    EXPECT_EQ(a.n_values, n * g.in) << name;
    // amax / 448 scales put every row's largest value at 448: no clipping, ratio 1.
    EXPECT_EQ(w.n_saturated, 0) << name;
    EXPECT_EQ(a.n_saturated, 0) << name;
    EXPECT_NEAR(w.ratio(), 1.0, 1e-6) << name;
    EXPECT_NEAR(a.ratio(), 1.0, 1e-6) << name;
  }
  EXPECT_TRUE(report.count("k_cache.fp8"));
  EXPECT_TRUE(report.count("v_cache.fp8"));
  // The head (lm_head) stays bf16.
  p.head(h);
  for (const auto& [point, seen] : p.headroom(spec.n_layers)) {
    EXPECT_EQ(point.find(".fp8"), std::string::npos) << point;
  }
  // Inputs count per run, weights once per conversion.
  p.reset(1, 16);
  p.layer(0, h.topRows(2));
  EXPECT_EQ(p.headroom(0).at("q.input.fp8").n_values, 2 * spec.hidden);
  EXPECT_EQ(p.headroom(0).at("q.weight.fp8").n_values, spec.q_width() * spec.hidden);
}

TEST_F(Fp8W8a8Path, OtherRecipesHaveNoFp8GemmPoints) {
  EmulatedPath p(ckpt, "emulated-cpu", &find_recipe("fp8-kv"));
  p.reset(1, 16);
  p.layer(0, p.embed(prompt));
  for (const auto& [point, seen] : p.headroom(0)) {
    EXPECT_EQ(point.find(".weight.fp8"), std::string::npos) << point;
    EXPECT_EQ(point.find(".input.fp8"), std::string::npos) << point;
  }
}

}  // namespace
}  // namespace fusecheck::ref
