// The planted super weight does what it is for: run through the FP32 reference, it puts
// a massive activation into one residual channel (REFERENCE.md section 5), which the same
// checkpoint without it does not have.
#include <algorithm>
#include <cmath>

#include <gtest/gtest.h>

#include "harness/checkpoint/synth.h"
#include "harness/core/checkpoint.h"
#include "harness/core/path_registry.h"
#include "tests/common/test_support.h"

namespace fusecheck {
namespace {

// Largest |x| of `channel` over the rows of the residual after layer 1, divided by the
// median |x| of the whole residual.
double channel_peak_over_median(const std::filesystem::path& dir, int channel) {
  register_builtin_paths();
  const auto ck = Checkpoint::open(dir);
  auto path = make_path("ref32-cpu", *ck, {});
  std::vector<std::int32_t> tokens = {1, 17, 290, 5, 88, 123, 42, 7, 250, 3, 199, 64};
  path->reset(1, static_cast<int>(tokens.size()));
  TapMatrix x = path->embed(tokens);
  for (int l = 0; l <= 1; ++l) x = path->layer(l, x).at(Tap::resid_out);
  std::vector<double> magnitudes;
  for (Eigen::Index i = 0; i < x.size(); ++i) magnitudes.push_back(std::abs(x.data()[i]));
  std::nth_element(magnitudes.begin(), magnitudes.begin() + magnitudes.size() / 2, magnitudes.end());
  const double median = magnitudes[magnitudes.size() / 2];
  EXPECT_GT(median, 0.0);
  return x.col(channel).cwiseAbs().maxCoeff() / median;
}

TEST(MassiveActivation, SuperWeightMakesOneResidualChannelHundredsOfTimesTheMedian) {
  const auto dir = test::scratch_dir();
  SynthOptions planted;
  planted.massive_activation = true;
  planted.massive_channel = 37;
  write_synthetic_checkpoint("llama-tiny", {}, dir / "base");
  write_synthetic_checkpoint("llama-tiny", planted, dir / "planted");
  const double base = channel_peak_over_median(dir / "base", 37);
  const double with = channel_peak_over_median(dir / "planted", 37);
  std::printf("channel 37 peak / median |resid|: %.1f without, %.1f with the super weight\n", base, with);
  EXPECT_LT(base, 20.0);
  EXPECT_GT(with, 300.0);
}

}  // namespace
}  // namespace fusecheck
