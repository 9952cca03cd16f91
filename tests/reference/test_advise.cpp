// advise (reference/advise.h) on a tiny random Qwen3: the modeled decode bytes by hand, the
// proposal under a target every mix meets and under one none meets, the proof run as the
// answer, and bad input refused.
#include <cmath>
#include <limits>
#include <string>

#include <gtest/gtest.h>

#include "harness/core/error.h"
#include "reference/advise.h"
#include "reference/random_checkpoint.h"
#include "tests/common/small_specs.h"

namespace fusecheck::ref {
namespace {

class Advise : public ::testing::Test {
 protected:
  ModelSpec spec = test::tiny_qwen3_tied_spec();  // 2 layers, hidden 64, q 64, kv 32, mlp 96
  RandomCheckpoint ckpt{spec, 31, DType::BF16, 8.0};
  std::vector<std::int32_t> prompt = {3, 14, 15, 9, 26, 5, 35, 8};
  AdviseOptions options(double target) {
    AdviseOptions o;
    o.target_kl = target;
    o.decode_steps = 4;
    o.kv_len = 100;
    return o;
  }
};

TEST_F(Advise, ModeledDecodeBytesAreWeightsPlusKvCacheAtTheirWidths) {
  // GEMM weights: q 64x64 + k,v 2 x 32x64 + o 64x64 + gate,up,down 3 x 96x64 = 30720 values;
  // KV: 2 x 100 keys x 32 values = 6400.
  EXPECT_EQ(modeled_decode_bytes(spec, "fused-v1", 100), 2.0 * 30720 + 2.0 * 6400);
  EXPECT_EQ(modeled_decode_bytes(spec, "fp8-kv", 100), 2.0 * 30720 + 6400);
  EXPECT_EQ(modeled_decode_bytes(spec, "fp8-w8a8", 100), 30720.0 + 6400);
}

TEST_F(Advise, AGenerousTargetSwitchesEveryLayerToTheCheapestRecipeAndProvesIt) {
  const AdviseResult r = advise(ckpt, prompt, options(1e9));
  ASSERT_TRUE(r.met);
  EXPECT_EQ(r.proposed, "fused-v1+fp8-w8a8@0+fp8-w8a8@1");
  ASSERT_EQ(r.proof_runs.size(), 1u);
  EXPECT_EQ(r.proof_runs.back().mix, r.proposed);
  EXPECT_GT(r.proof_runs.back().kl_mean, r.base.kl_mean) << "FP8 in every layer moves the logits";
  EXPECT_EQ(r.proof_runs.back().decode_bytes, 2 * modeled_decode_bytes(spec, "fp8-w8a8", 100));
  EXPECT_EQ(r.measured.size(), 4u);  // 2 candidates x 2 layers
  EXPECT_EQ(r.proof_runs.back().layer_ms.size(), 2u);
}

TEST_F(Advise, ATargetTheBaseMissesMeetsNoMixAndSaysSo) {
  const AdviseResult r = advise(ckpt, prompt, options(1e-30));
  EXPECT_GT(r.base.kl_mean, 1e-30);
  EXPECT_FALSE(r.met);
  EXPECT_EQ(r.proposed, "fused-v1");
}

TEST_F(Advise, AMetProposalHasAMeasuredKlUnderTheTarget) {
  // Between the base and everything switched: whatever is proposed was run and measured.
  const AdviseResult all = advise(ckpt, prompt, options(1e9));
  const double target = (all.base.kl_mean + all.proof_runs.back().kl_mean) / 2;
  const AdviseResult r = advise(ckpt, prompt, options(target));
  ASSERT_TRUE(r.met);
  EXPECT_LE(r.proof_runs.back().kl_mean, target);
  EXPECT_EQ(r.proof_runs.back().mix, r.proposed);
  EXPECT_LT(r.proof_runs.back().decode_bytes, all.base.decode_bytes * (1 + 1e-12));
  RecordProperty("proposed", r.proposed);
}

TEST_F(Advise, BadTargetsAndUnknownRecipesAreRefused) {
  for (double bad : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    EXPECT_THROW(advise(ckpt, prompt, options(bad)), InputError) << bad;
  }
  AdviseOptions o = options(1e-2);
  o.candidates = {"fp4"};
  EXPECT_THROW(advise(ckpt, prompt, o), InputError);
  EXPECT_THROW(advise(ckpt, {}, options(1e-2)), InputError);
}

}  // namespace
}  // namespace fusecheck::ref
