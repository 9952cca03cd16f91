// The FP8 key bound (harness/check/fp8_static.h): by hand on small integer weights, from
// k_norm alone for Qwen3, never below the keys a forward pass produces, and judged per
// recipe (static scales judged, dynamic ones not); bad scales and names refused.
#include <cmath>
#include <limits>
#include <string>

#include <gtest/gtest.h>

#include "harness/check/fp8_static.h"
#include "harness/core/error.h"
#include "reference/decoder_path.h"
#include "reference/random_checkpoint.h"
#include "tests/common/small_specs.h"

namespace fusecheck::check {
namespace {

TEST(Fp8KeyBound, WithoutKNormIsSqrt2TimesSqrtHiddenTimesTheLargestNormScaledKRow) {
  const ModelSpec spec = test::two_layer_spec("llama", test::kOddShapes, RopeStyle::Interleaved, "F32");  // hidden 72, kv width 24
  ref::RandomCheckpoint ck(spec, 5);
  std::vector<float> norm(72, 1.0f), wk(24 * 72, 0.0f);
  norm[1] = 2.0f;
  wk[0] = 3.0f;   // row 0: (3, 2 x 2) -> norm 5
  wk[1] = 2.0f;
  for (const char* layer : {"model.layers.0.", "model.layers.1."}) {
    ck.set_values(std::string(layer) + "input_layernorm.weight", norm);
    ck.set_values(std::string(layer) + "self_attn.k_proj.weight", wk);
  }
  const Fp8StaticFigure f = fp8_key_bound(ck, "fp8-kv", 0.5);
  ASSERT_EQ(f.layers.size(), 2u);
  EXPECT_NEAR(f.layers[0].bound, std::sqrt(2.0) * std::sqrt(72.0) * 5.0, 1e-9);  // 60
  EXPECT_NEAR(f.layers[0].ratio, f.layers[0].bound / (448 * 0.5), 1e-12);
  EXPECT_FALSE(f.layers[0].from_k_norm);
  EXPECT_EQ(f.status, "ok");  // 60 / 224 = 0.27
}

TEST(Fp8KeyBound, WithKNormIsTheLargestKNormWeightTimesSqrtHeadDim) {
  const ModelSpec spec = test::tiny_qwen3_tied_spec();  // head_dim 16
  ref::RandomCheckpoint ck(spec, 7, DType::F32, 96.5);  // the 96.5x k_norm profile, scaled
  const TensorView* kn = ck.model().layers[1].k_norm;
  std::vector<float> w(static_cast<std::size_t>(kn->numel()));
  kn->to_float(std::span<float>(w));
  double mx = 0;
  for (float x : w) mx = std::max(mx, std::fabs(double(x)));
  const Fp8StaticFigure f = fp8_key_bound(ck, "fp8-kv", 1.0);
  EXPECT_TRUE(f.layers[1].from_k_norm);
  EXPECT_DOUBLE_EQ(f.layers[1].bound, mx * 4.0);
  EXPECT_EQ(f.status, "fail") << "k_norm x96.5 can put keys above 448 at scale 1";
  // A calibrated scale large enough makes the same bound pass.
  EXPECT_EQ(fp8_key_bound(ck, "fp8-kv", f.layers[f.worst_layer].bound / 448 / 0.4).status, "ok");
}

TEST(Fp8KeyBound, HoldsForTheKeysOfARealForwardPass) {
  for (const char* arch : {"qwen3", "qwen2", "llama"}) {
    const ModelSpec spec = test::two_layer_spec(arch, test::kOddShapes, RopeStyle::Interleaved, "F32");
    ref::RandomCheckpoint ck(spec, 11, DType::F32, 8.0);
    ref::Ref32Path p(ck, "ref32-cpu");
    p.reset(1, 32);
    std::vector<std::int32_t> prompt;
    for (int i = 0; i < 29; ++i) prompt.push_back((i * 37 + 5) % spec.vocab);
    TapMatrix h = p.embed(prompt);
    const Fp8StaticFigure f = fp8_key_bound(ck, "fp8-kv-dynamic", 1.0);
    for (int l = 0; l < spec.n_layers; ++l) {
      const TapSet t = p.layer(l, h);
      const double seen = t.at(Tap::k_rope).cwiseAbs().maxCoeff();
      EXPECT_GT(seen, 0) << arch;
      EXPECT_LE(seen, f.layers[std::size_t(l)].bound) << arch << " layer " << l;
      h = t.at(Tap::resid_out);
    }
    EXPECT_EQ(f.status, "not judged") << "dynamic scales follow the keys";
  }
}

TEST(Fp8KeyBound, BadScalesAndNonFp8RecipesAreRefused) {
  ref::RandomCheckpoint ck(test::tiny_qwen3_tied_spec(), 7);
  for (double bad : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    EXPECT_THROW(fp8_key_bound(ck, "fp8-kv", bad), InputError) << bad;
  }
  try {
    fp8_key_bound(ck, "fused-v1", 1.0);
    ADD_FAILURE() << "fused-v1 has no FP8 cache";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("is not an FP8 recipe"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fusecheck::check
