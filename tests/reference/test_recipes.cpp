// The recipes as written in docs/recipes.md, checked bit for bit: each rounded tap of
// emulated-cpu is rebuilt from the taps before it with the documented formula (FP32
// arithmetic, one rounding where the table says so). The fused kernels implement
// fused-v1 from that page, so these tests pin the page and the emulation together.
#include <cmath>

#include <gtest/gtest.h>

#include "reference/decoder_path.h"
#include "reference/random_checkpoint.h"
#include "tests/common/small_specs.h"

namespace fusecheck::ref {
namespace {

ModelSpec spec() { return test::tiny_qwen3_tied_spec(); }

using MatF = Mat<float>;

MatF f32(const TapMatrix& m) { return m.cast<float>(); }
MatF bf16(const MatF& m) { return m.unaryExpr([](float x) { return round_to_bf16(x); }); }

Vec<float> weights_of(const TensorView& t) {
  Vec<float> w(t.numel());
  for (Index i = 0; i < w.size(); ++i) w(i) = static_cast<float>(t.at(i));
  return w;
}

// RMSNorm in FP32 with the path's own reduction, so that only the roundings are tested.
MatF norm_fp32(const MatF& x, const Vec<float>& w, double eps) {
  NoRounding<float> none;
  return rms_norm(x, w, eps, x.cols(), none,
                  {RoundPoint::mlp_norm_sumsq, RoundPoint::mlp_norm_normalized, RoundPoint::mlp_norm});
}

struct LayerRun {
  TapMatrix input;
  TapSet taps;
};

LayerRun run_layer1(const Checkpoint& ckpt, const char* recipe) {
  EmulatedPath p(ckpt, "emulated-cpu", &find_recipe(recipe));
  p.reset(1, 8);
  const std::vector<std::int32_t> tokens = {3, 14, 15, 9, 26, 5};
  const TapMatrix h0 = p.layer(0, p.embed(tokens)).at(Tap::resid_out);
  return {h0, p.layer(1, h0)};
}

class RecipeContract : public ::testing::Test {
 protected:
  RandomCheckpoint ckpt{spec(), 31, DType::BF16};
  Vec<float> mlp_w = weights_of(*ckpt.model().layers[1].mlp_norm);
};

TEST_F(RecipeContract, FusedV1ResidualsRoundOnceAfterAnFp32Add) {
  const auto r = run_layer1(ckpt, "fused-v1");
  const MatF x = f32(r.input);
  EXPECT_EQ(f32(r.taps.at(Tap::resid_mid)), bf16(x + f32(r.taps.at(Tap::o_proj))));
  // K7: bf16 resid_mid plus the FP32 down accumulator, one rounding.
  EXPECT_EQ(f32(r.taps.at(Tap::resid_out)),
            bf16(f32(r.taps.at(Tap::resid_mid)) + f32(r.taps.at(Tap::down))));
}

TEST_F(RecipeContract, FusedV1MlpNormReadsTheFp32SumAndRoundsOnlyItsOutput) {
  const auto r = run_layer1(ckpt, "fused-v1");
  const MatF sum = f32(r.input) + f32(r.taps.at(Tap::o_proj));
  EXPECT_EQ(f32(r.taps.at(Tap::mlp_norm)), bf16(norm_fp32(sum, mlp_w, spec().rms_eps)));
  // Normalizing the rounded resid_mid instead differs somewhere: the test can tell them apart.
  EXPECT_NE(f32(r.taps.at(Tap::mlp_norm)),
            bf16(norm_fp32(f32(r.taps.at(Tap::resid_mid)), mlp_w, spec().rms_eps)));
}

TEST_F(RecipeContract, FusedV1ActIsOneRoundingOfSiluGateTimesUpInFp32) {
  const auto r = run_layer1(ckpt, "fused-v1");
  const MatF g = f32(r.taps.at(Tap::gate)), u = f32(r.taps.at(Tap::up));
  MatF act(g.rows(), g.cols());
  for (Index i = 0; i < g.size(); ++i) act.data()[i] = silu(g.data()[i]) * u.data()[i];
  EXPECT_EQ(f32(r.taps.at(Tap::act)), bf16(act));
}

TEST_F(RecipeContract, HfBf16RoundsTheNormalizedValueThenTheWeightProduct) {
  const auto r = run_layer1(ckpt, "hf-bf16");
  const Vec<float> ones = Vec<float>::Ones(spec().hidden);
  const MatF normalized = bf16(norm_fp32(f32(r.taps.at(Tap::resid_mid)), ones, spec().rms_eps));
  MatF want(normalized.rows(), normalized.cols());
  for (Index i = 0; i < want.rows(); ++i) {
    for (Index j = 0; j < want.cols(); ++j) want(i, j) = round_to_bf16(mlp_w(j) * normalized(i, j));
  }
  EXPECT_EQ(f32(r.taps.at(Tap::mlp_norm)), want);
}

TEST_F(RecipeContract, HfBf16RoundsSiluBeforeMultiplyingByUp) {
  const auto r = run_layer1(ckpt, "hf-bf16");
  const MatF g = f32(r.taps.at(Tap::gate)), u = f32(r.taps.at(Tap::up));
  MatF act(g.rows(), g.cols());
  for (Index i = 0; i < g.size(); ++i) act.data()[i] = round_to_bf16(round_to_bf16(silu(g.data()[i])) * u.data()[i]);
  EXPECT_EQ(f32(r.taps.at(Tap::act)), act);
  EXPECT_EQ(f32(r.taps.at(Tap::resid_out)),
            bf16(f32(r.taps.at(Tap::resid_mid)) + f32(r.taps.at(Tap::down))));
}

TEST(RecipeTable, FusedV1RoundsExactlyTheDocumentedPoints) {
  // docs/recipes.md, fused-v1: the list of rounded points, verbatim.
  const std::vector<std::string> documented = {
      "weights", "layer_input", "attn_norm", "q", "k", "v", "q_rope", "k_rope", "attn",
      "o_proj", "resid_mid", "mlp_norm", "act", "resid_out", "final_norm"};
  const Recipe& r = find_recipe("fused-v1");
  std::vector<std::string> rounded;
  for (int p = 0; p < kRoundPointCount; ++p) {
    if (r.rounds_at(static_cast<RoundPoint>(p))) rounded.emplace_back(round_point_name(static_cast<RoundPoint>(p)));
  }
  EXPECT_EQ(rounded, documented);
  EXPECT_TRUE(r.mlp_norm_reads_unrounded_sum);
  EXPECT_FALSE(r.rope_angles_in_fp32);
}

// The flashinfer recipe's rounding points are the table of docs/recipes.md: one rounding
// per kernel output (gate|up and the q/k norms are kernel outputs there), the FP32 sum
// normalized by FusedAddRMSNorm, and vLLM's FP32-angle cos|sin cache kept in FP32.
TEST(RecipeTable, FlashinferRecipeRoundsEachKernelOutputOnce) {
  const std::vector<std::string> documented = {
      "weights", "layer_input", "attn_norm", "q", "k", "v", "q_normed", "k_normed", "q_rope", "k_rope",
      "attn", "o_proj", "resid_mid", "mlp_norm", "gate", "up", "act", "down", "resid_out",
      "final_norm", "logits"};
  const Recipe& r = find_recipe("flashinfer");
  std::vector<std::string> rounded;
  for (int p = 0; p < kRoundPointCount; ++p) {
    if (r.rounds_at(static_cast<RoundPoint>(p))) rounded.emplace_back(round_point_name(static_cast<RoundPoint>(p)));
  }
  EXPECT_EQ(rounded, documented);
  EXPECT_TRUE(r.mlp_norm_reads_unrounded_sum);
  EXPECT_TRUE(r.rope_angles_in_fp32);
  EXPECT_EQ(r.format, DType::BF16);
}

TEST(RecipeTable, HfRecipesRoundEveryOpAndFp16VariantsUseFp16) {
  for (const char* name : {"hf-bf16", "hf-fp16"}) {
    const Recipe& r = find_recipe(name);
    for (int p = 0; p <= static_cast<int>(RoundPoint::logits); ++p) {
      EXPECT_TRUE(r.rounds_at(static_cast<RoundPoint>(p))) << name << " " << round_point_name(static_cast<RoundPoint>(p));
    }
    EXPECT_FALSE(r.rounds_at(RoundPoint::attn_norm_sumsq)) << "sums of squares are measured, not rounded";
  }
  EXPECT_EQ(find_recipe("hf-fp16").format, DType::F16);
  EXPECT_EQ(find_recipe("fused-v1-fp16").format, DType::F16);
  EXPECT_EQ(find_recipe("hf-bf16").format, DType::BF16);
}

}  // namespace
}  // namespace fusecheck::ref
