// Error against KV age in a run (harness/run/kv_age_mode.h): filled for the emulated
// fp8-kv paths (fp8-w8a8 included) with greedy steps, exactly what `fusecheck kv-age`
// measures, and for nothing else (other recipes, mixes, other paths, no greedy steps).
#include <gtest/gtest.h>

#include "harness/run/kv_age_mode.h"
#include "reference/kv_age.h"
#include "reference/random_checkpoint.h"
#include "tests/common/small_specs.h"

namespace fusecheck::run {
namespace {

PathResult path(const std::string& name, const std::string& recipe) {
  PathResult p;
  p.slot.name = name;
  p.slot.recipe = recipe;
  return p;
}

TEST(KvAgeMode, FillsTheFp8KvPathsWithWhatKvAgeMeasures) {
  ref::RandomCheckpoint ck(test::tiny_qwen3_tied_spec(), 17, DType::BF16, 8.0);
  const std::vector<std::int32_t> prompt = {3, 14, 15, 9, 26, 5, 35};
  RunResult r;
  r.paths = {path("emulated-cpu", "fp8-kv"), path("emulated-cpu", "fused-v1"), path("emulated-cpu", "fp8-w8a8"),
             path("emulated-cpu", "fp8-w8a8+fused-v1@0"), path("ref32-cpu", "")};
  add_kv_age(r, ck, prompt, 4);
  const ref::KvAgeReport want = ref::measure_kv_age_error(ck, find_recipe("fp8-kv"), prompt, 4);
  ASSERT_EQ(r.paths[0].kv_age.size(), want.buckets.size());
  for (std::size_t i = 0; i < want.buckets.size(); ++i) {
    EXPECT_EQ(r.paths[0].kv_age[i].lo, want.buckets[i].lo);
    EXPECT_EQ(r.paths[0].kv_age[i].rel_error, want.buckets[i].rel_error);
    EXPECT_EQ(r.paths[0].kv_age[i].rel_error_by_layer, want.buckets[i].rel_error_by_layer);
  }
  EXPECT_TRUE(r.paths[1].kv_age.empty()) << "no FP8 cache";
  EXPECT_FALSE(r.paths[2].kv_age.empty()) << "fp8-w8a8 has the fp8-kv cache";
  EXPECT_TRUE(r.paths[3].kv_age.empty()) << "mixes are not measured";
  EXPECT_TRUE(r.paths[4].kv_age.empty());
}

TEST(KvAgeMode, NothingWithoutGreedySteps) {
  ref::RandomCheckpoint ck(test::tiny_qwen3_tied_spec(), 17);
  RunResult r;
  r.paths = {path("emulated-cpu", "fp8-kv")};
  add_kv_age(r, ck, std::vector<std::int32_t>{1, 2, 3}, 0);
  EXPECT_TRUE(r.paths[0].kv_age.empty());
}

}  // namespace
}  // namespace fusecheck::run
