// The CPU paths on the synthetic checkpoints of `fusecheck synth` (qwen3-tiny with its
// k_norm outliers, qwen2-tiny with biases, llama-tiny untied), read back from disk:
// ref32 against ref64 per tap, isolated against stacked, emulated recipes in their band,
// and the `generate --dump-hidden` file the HF peer script reads.
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/checkpoint/synth.h"
#include "harness/core/checkpoint.h"
#include "reference/decoder_path.h"
#include "tests/common/test_support.h"

namespace fusecheck::ref {
namespace {

double rel_l2(const TapMatrix& a, const TapMatrix& ref) {
  EXPECT_GT(ref.norm(), 0.0) << "reference is all zeros";
  return (a - ref).norm() / ref.norm();
}

std::vector<TapSet> run_stack(Path& path, const std::vector<std::int32_t>& tokens, int n_layers) {
  std::vector<TapSet> out;
  TapMatrix h = path.embed(tokens);
  for (int l = 0; l < n_layers; ++l) {
    out.push_back(path.layer(l, h));
    h = out.back().at(Tap::resid_out);
  }
  return out;
}

const std::vector<std::int32_t> kTokens = {1, 57, 300, 12, 199, 8, 250, 77, 3};

class SynthCheckpoint : public ::testing::TestWithParam<std::string> {
 protected:
  std::unique_ptr<Checkpoint> open_synth() {
    // Beside the scratch directory: run_fusecheck() empties the scratch directory itself.
    const std::filesystem::path dir = test::scratch_dir().string() + "-ckpt";
    std::filesystem::remove_all(dir);
    SynthOptions o;
    o.seed = 3;
    write_synthetic_checkpoint(GetParam(), o, dir);
    return Checkpoint::open(dir);
  }
};

TEST_P(SynthCheckpoint, Ref32AgreesWithRef64AtFp32AccuracyOnEveryTapOfEveryLayer) {
  const auto ckpt = open_synth();
  const int L = ckpt->spec().n_layers;
  Ref64Path ref64(*ckpt, "ref64-cpu");
  Ref32Path ref32(*ckpt, "ref32-cpu");
  ref64.reset(1, 16);
  ref32.reset(1, 16);
  const auto a = run_stack(ref64, kTokens, L), b = run_stack(ref32, kTokens, L);
  for (int l = 0; l < L; ++l) {
    for (Tap tap : ref32.taps()) {
      // FP32 (6e-8 per rounding) through sums of <= 200 terms and k_norm weights up to
      // 96.5 that sharpen the softmax: below 2e-5 everywhere.
      EXPECT_LT(rel_l2(b[l].at(tap), a[l].at(tap)), 2e-5) << GetParam() << " layer " << l << " " << tap_name(tap);
    }
  }
  const TapMatrix last = a[L - 1].at(Tap::resid_out);
  EXPECT_LT(rel_l2(ref32.head(last.cast<float>().cast<double>()).at(Tap::logits), ref64.head(last).at(Tap::logits)), 1e-5);
}

TEST_P(SynthCheckpoint, IsolatedLayersEqualTheStack) {
  const auto ckpt = open_synth();
  const int L = ckpt->spec().n_layers;
  Ref64Path stacked(*ckpt, "ref64-cpu");
  stacked.reset(1, 16);
  const auto all = run_stack(stacked, kTokens, L);
  for (int l = 1; l < L; ++l) {
    Ref64Path alone(*ckpt, "ref64-cpu");
    alone.reset(1, 16);
    const TapSet got = alone.layer(l, all[l - 1].at(Tap::resid_out));
    for (Tap tap : alone.taps()) EXPECT_EQ(got.at(tap), all[l].at(tap)) << "layer " << l << " " << tap_name(tap);
  }
}

TEST_P(SynthCheckpoint, EmulatedRecipesLandInTheirBandAgainstRef64) {
  const auto ckpt = open_synth();
  const int L = ckpt->spec().n_layers;
  Ref64Path ref(*ckpt, "ref64-cpu");
  ref.reset(1, 16);
  const TapMatrix want = run_stack(ref, kTokens, L)[L - 1].at(Tap::resid_out);
  for (const std::string name : {"hf-bf16", "fused-v1"}) {
    EmulatedPath p(*ckpt, "emulated-cpu", &find_recipe(name));
    p.reset(1, 16);
    const double e = rel_l2(run_stack(p, kTokens, L)[L - 1].at(Tap::resid_out), want);
    // bf16 (2^-9 relative per rounding), tens of roundings per layer, 3 layers: ~1e-2;
    // qwen3-tiny's k_norm weights up to 96.5 sharpen attention and reach ~5e-2.
    EXPECT_GT(e, 1e-4) << name;
    EXPECT_LT(e, 1e-1) << name;
  }
}

TEST_P(SynthCheckpoint, DumpHiddenWritesEveryLayerOfThePrefill) {
  const auto ckpt = open_synth();
  const std::filesystem::path file = test::scratch_dir().string() + "-hidden.json";
  const auto r = test::run_fusecheck("generate " + ckpt->path().string() +
                                     " --path ref64-cpu --steps 2 --prompt-ids 1,57,300 --dump-hidden " +
                                     file.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(file);
  const auto j = nlohmann::json::parse(in);
  const int L = ckpt->spec().n_layers;
  ASSERT_EQ(j["hidden"].size(), static_cast<std::size_t>(L + 1));
  Ref64Path ref(*ckpt, "ref64-cpu");
  ref.reset(1, 3);
  const auto taps = run_stack(ref, {1, 57, 300}, L);
  const TapMatrix& last = taps[L - 1].at(Tap::resid_out);
  for (Eigen::Index r2 = 0; r2 < last.rows(); ++r2) {
    for (Eigen::Index c = 0; c < last.cols(); ++c) {
      ASSERT_EQ(j["hidden"][L][r2][c].get<double>(), last(r2, c)) << "17 digits round-trip a double";
    }
  }
  EXPECT_EQ(j["logits"].size(), 3u);
  EXPECT_EQ(j["logits"][0].size(), static_cast<std::size_t>(ckpt->spec().vocab));
}

INSTANTIATE_TEST_SUITE_P(Profiles, SynthCheckpoint,
                         ::testing::Values("qwen3-tiny", "qwen2-tiny", "llama-tiny"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) c = c == '-' ? '_' : c;
                           return n;
                         });

}  // namespace
}  // namespace fusecheck::ref
