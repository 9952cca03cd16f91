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

class PublishedStats : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(test::scratch_dir());
    write_synthetic_checkpoint("qwen3-0.6b", {}, *dir_);  // seed 0, bf16, the published shapes
    checkpoint_ = Checkpoint::open(*dir_).release();
  }
  static void TearDownTestSuite() {
    delete checkpoint_;
    std::filesystem::remove_all(*dir_);  // 1.2 GB
    delete dir_;
  }
  static const Stats k_norm(int layer) { return stats_of(*checkpoint_->model().layers.at(layer).k_norm); }
  static inline std::filesystem::path* dir_ = nullptr;
  static inline Checkpoint* checkpoint_ = nullptr;
};

TEST_F(PublishedStats, ShapesAreQwen3_0_6B) {
  const ModelSpec& s = checkpoint_->spec();
  EXPECT_EQ(s.n_layers, 28);
  EXPECT_EQ(s.hidden, 1024);
  EXPECT_EQ(s.q_width(), 2048);
  EXPECT_EQ(s.kv_width(), 1024);
  EXPECT_EQ(s.vocab, 151936);
  EXPECT_TRUE(s.tied_embeddings);
}

TEST_F(PublishedStats, Layer0KNormHasMax96_5Mean3_56Std9_13) {
  const Stats s = k_norm(0);
  EXPECT_EQ(s.max, 96.5);
  EXPECT_NEAR(s.mean, 3.56, 0.005);        // published to 2 decimals; bf16 rounding moves it < 1e-3
  EXPECT_NEAR(s.sample_std, 9.13, 0.005);
  EXPECT_NEAR(s.max / s.median_low, 42.3, 0.05);  // the seed's "42.3x their median"
  EXPECT_EQ(s.median_low, s.median_mid);   // either median convention gives the same ratio
}

TEST_F(PublishedStats, PublishedLayerMaxima) {
  EXPECT_EQ(k_norm(1).max, 44.5);
  EXPECT_EQ(k_norm(2).max, 44.0);
  EXPECT_EQ(k_norm(4).max, 41.75);
  EXPECT_EQ(k_norm(5).max, 34.0);
}

TEST_F(PublishedStats, Layers1To7AreAbove20xTheirMedian) {
  for (int l = 1; l <= 7; ++l) {
    const Stats s = k_norm(l);
    EXPECT_GT(s.max / s.median_low, 20.0) << "layer " << l;
  }
}

TEST_F(PublishedStats, SixteenOf28LayersHaveANormWeightAbove10) {
  // The seed's "extreme layer": k_norm or q_norm max above 10.
  int extreme = 0;
  for (const LayerTensors& l : checkpoint_->model().layers) {
    extreme += std::max(stats_of(*l.k_norm).max, stats_of(*l.q_norm).max) > 10.0;
  }
  EXPECT_EQ(extreme, 16);
}

TEST_F(PublishedStats, FinalNormHasMax15_3Mean3_84) {
  const Stats s = stats_of(*checkpoint_->model().final_norm);
  EXPECT_NEAR(s.max, 15.3, 0.05);  // 15.3125, the bf16 nearest to 15.3
  EXPECT_NEAR(s.mean, 3.84, 0.005);
}

TEST_F(PublishedStats, ProjectionsAreFanInScaled) {
  const Stats down = stats_of(*checkpoint_->model().layers[3].w_down);
  EXPECT_NEAR(down.mean, 0.0, 1e-4);
  EXPECT_NEAR(down.sample_std, 1.0 / std::sqrt(3072.0), 1e-4);
  const Stats q = stats_of(*checkpoint_->model().layers[3].wq);
  EXPECT_NEAR(q.sample_std, 1.0 / std::sqrt(1024.0), 1e-4);
}

}  // namespace
}  // namespace fusecheck
