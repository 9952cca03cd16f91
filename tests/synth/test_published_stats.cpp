// The acceptance test: a synthetic qwen3-0.6b checkpoint, read back through
// Checkpoint::open, shows the published Qwen3-0.6B norm statistics. The statistics are
// computed here from the stored values, independently of the generator's plans.
#include <algorithm>
#include <cmath>
#include <numeric>

#include <gtest/gtest.h>

#include "harness/checkpoint/synth.h"
#include "harness/core/checkpoint.h"
#include "tests/common/test_support.h"

namespace fusecheck {
namespace {

struct Stats {
  double max = 0, mean = 0, sample_std = 0, median_low = 0, median_mid = 0;
};

Stats stats_of(const TensorView& t) {
  std::vector<double> v = t.to_double();
  Stats s;
  s.max = *std::max_element(v.begin(), v.end());
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / v.size();
  double ss = 0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.sample_std = std::sqrt(ss / (v.size() - 1));  // torch.std's default
  std::sort(v.begin(), v.end());
  s.median_low = v[(v.size() - 1) / 2];                              // torch.median
  s.median_mid = (v[(v.size() - 1) / 2] + v[v.size() / 2]) / 2;      // numpy.median
  return s;
}

// One test, because each test runs in its own process and the checkpoint is 1.2 GB.
TEST(PublishedStats, SyntheticQwen3_0_6bShowsThePublishedNormStatistics) {
  const auto dir = test::scratch_dir();
  write_synthetic_checkpoint("qwen3-0.6b", {}, dir);  // seed 0, bf16, the published shapes
  const auto ck = Checkpoint::open(dir);
  const ModelSpec& spec = ck->spec();
  ASSERT_EQ(spec.n_layers, 28);
  EXPECT_EQ(spec.hidden, 1024);
  EXPECT_EQ(spec.q_width(), 2048);
  EXPECT_EQ(spec.kv_width(), 1024);
  EXPECT_EQ(spec.vocab, 151936);
  EXPECT_TRUE(spec.tied_embeddings);
  const auto k_norm = [&](int layer) { return stats_of(*ck->model().layers.at(layer).k_norm); };

  const Stats layer0 = k_norm(0);
  EXPECT_EQ(layer0.max, 96.5);
  EXPECT_NEAR(layer0.mean, 3.56, 0.005);  // published to 2 decimals; bf16 rounding moves it < 1e-3
  EXPECT_NEAR(layer0.sample_std, 9.13, 0.005);
  EXPECT_NEAR(layer0.max / layer0.median_low, 42.3, 0.05);  // the seed's "42.3x their median"
  EXPECT_EQ(layer0.median_low, layer0.median_mid);  // either median convention gives that ratio

  EXPECT_EQ(k_norm(1).max, 44.5);
  EXPECT_EQ(k_norm(2).max, 44.0);
  EXPECT_EQ(k_norm(4).max, 41.75);
  EXPECT_EQ(k_norm(5).max, 34.0);
  for (int l = 1; l <= 7; ++l) EXPECT_GT(k_norm(l).max / k_norm(l).median_low, 20.0) << "layer " << l;

  // The seed's "extreme layer": k_norm or q_norm max above 10.
  int extreme = 0;
  for (const LayerTensors& l : ck->model().layers) {
    extreme += std::max(stats_of(*l.k_norm).max, stats_of(*l.q_norm).max) > 10.0;
  }
  EXPECT_EQ(extreme, 16);

  const Stats final_norm = stats_of(*ck->model().final_norm);
  EXPECT_NEAR(final_norm.max, 15.3, 0.05);  // 15.3125, the bf16 nearest to 15.3
  EXPECT_NEAR(final_norm.mean, 3.84, 0.005);

  // Projections: zero mean, std 1/sqrt(fan_in) (tolerance: sampling error of 3M values).
  const Stats down = stats_of(*ck->model().layers[3].w_down);
  EXPECT_NEAR(down.mean, 0.0, 1e-4);
  EXPECT_NEAR(down.sample_std, 1.0 / std::sqrt(3072.0), 1e-4);
  EXPECT_NEAR(stats_of(*ck->model().layers[3].wq).sample_std, 1.0 / std::sqrt(1024.0), 1e-4);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fusecheck
