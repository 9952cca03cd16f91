// Per-layer recipes on emulated-cpu (docs/recipes.md, "Per-layer recipes"): each layer of a
// recipe mix computes exactly what its recipe's own path computes, the head follows the
// base, counts stay per layer; mixes the model or the formats cannot take are refused.
#include <string>

#include <gtest/gtest.h>

#include "harness/core/error.h"
#include "reference/decoder_path.h"
#include "reference/random_checkpoint.h"
#include "tests/common/small_specs.h"

namespace fusecheck::ref {
namespace {

class PerLayerRecipes : public ::testing::Test {
 protected:
  ModelSpec spec = test::tiny_qwen3_tied_spec();  // 2 layers
  RandomCheckpoint ckpt{spec, 29, DType::BF16, 8.0};
  std::vector<std::int32_t> prompt = {3, 14, 15, 9, 26, 5, 35};

  std::string error_of(const std::string& mix) {
    try {
      recipes_per_slot(parse_recipe_mix(mix), spec.n_layers);
    } catch (const InputError& e) {
      return e.what();
    }
    return "(no error)";
  }
};

TEST_F(PerLayerRecipes, EachLayerIsBitIdenticalToItsRecipesOwnPath) {
  EmulatedPath mixed(ckpt, "emulated-cpu", recipes_per_slot(parse_recipe_mix("fp8-w8a8+fused-v1@0"), 2));
  EmulatedPath fused(ckpt, "emulated-cpu", &find_recipe("fused-v1"));
  EmulatedPath fp8(ckpt, "emulated-cpu", &find_recipe("fp8-w8a8"));
  for (Path* p : {static_cast<Path*>(&mixed), static_cast<Path*>(&fused), static_cast<Path*>(&fp8)}) p->reset(1, 16);
  const TapMatrix h = mixed.embed(prompt);
  ASSERT_EQ(h, fused.embed(prompt));
  const TapSet m0 = mixed.layer(0, h);
  const TapSet f0 = fused.layer(0, h);
  for (const auto& [tap, value] : f0) EXPECT_EQ(m0.at(tap), value) << "layer 0 " << tap_name(tap);
  fp8.layer(0, h);  // fills fp8's layer-0 cache; layer 1 reads only its own
  const TapSet m1 = mixed.layer(1, m0.at(Tap::resid_out));
  const TapSet e1 = fp8.layer(1, m0.at(Tap::resid_out));
  for (const auto& [tap, value] : e1) EXPECT_EQ(m1.at(tap), value) << "layer 1 " << tap_name(tap);
  // The head is the base's (fp8-w8a8 keeps lm_head bf16 as fused-v1 does, so compare counts).
  EXPECT_EQ(mixed.head(m1.at(Tap::resid_out)).at(Tap::logits), fp8.head(m1.at(Tap::resid_out)).at(Tap::logits));
  // FP8 counts only where FP8 runs.
  EXPECT_FALSE(mixed.headroom(0).count("q.weight.fp8"));
  EXPECT_FALSE(mixed.headroom(0).count("k_cache.fp8"));
  EXPECT_EQ(mixed.kv_fp8(0), nullptr);
  EXPECT_TRUE(mixed.headroom(1).count("q.weight.fp8"));
  EXPECT_NE(mixed.kv_fp8(1), nullptr);
}

TEST_F(PerLayerRecipes, LayersBeyondTheModelAreRefused) {
  const std::string e = error_of("fp8-w8a8+fused-v1@1-2");
  EXPECT_NE(e.find("beyond the model's 2 layers (0..1)"), std::string::npos) << e;
}

TEST_F(PerLayerRecipes, UnknownRecipesAreRefusedWithTheKnownOnes) {
  const std::string e = error_of("fp8-w8a8+fp4@0");
  EXPECT_NE(e.find("unknown recipe 'fp4'"), std::string::npos) << e;
}

TEST_F(PerLayerRecipes, Bf16AndFp16RecipesCannotShareTheResidualStream) {
  const std::string e = error_of("fused-v1+fused-v1-fp16@0");
  EXPECT_NE(e.find("a mix keeps one format"), std::string::npos) << e;
}

}  // namespace
}  // namespace fusecheck::ref
