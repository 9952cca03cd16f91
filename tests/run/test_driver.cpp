// The side-by-side driver on fake paths: tables cover every layer and shared tap, the
// errors land where the arithmetic puts them, divergence, decode, perturbation, greedy,
// the ref64 noise floor, and the results file written from it.
#include <cmath>
#include <fstream>
#include <map>
#include <stdexcept>

#include <gtest/gtest.h>

#include "harness/core/error.h"
#include "harness/results/h5_tree.h"
#include "harness/run/driver.h"
#include "harness/run/run_writer.h"
#include "harness/run/summary.h"
#include "tests/common/test_support.h"
#include "tests/run/fake_path.h"

namespace fusecheck::run {
namespace {

using test::FakeModel;
using test::FakePath;

const FakeModel kModel{24, 37, 3};

// A bf16 fake that claims both capabilities: perturbation (its set_perturbation is
// FakePath's, which throws for a name not starting with "ref": a broken claim) and headroom
// (one rounding point, "q", whose max |x| grows with the layer).
class CapableFakePath final : public FakePath {
 public:
  using FakePath::FakePath;
  PathCapabilities capabilities() const override { return {.perturbation = true, .headroom = true}; }
  std::map<std::string, Headroom> headroom(int layer) const override {
    Headroom h;
    h.max_abs = 2.0 * (layer + 1);
    h.max_finite = 65504;
    h.n_values = 10;
    h.n_saturated = layer;
    h.rounded = true;
    return {{"q", h}};
  }
};

// A bf16 fake with headroom that counts, per layer, the rows it has seen since reset() (as
// n_values and as saturated values), as a recipe's counters do.
class RowCountingFakePath final : public FakePath {
 public:
  using FakePath::FakePath;
  PathCapabilities capabilities() const override { return {.headroom = true}; }
  void reset(int batch, int capacity) override {
    FakePath::reset(batch, capacity);
    rows_.assign(static_cast<std::size_t>(kModel.layers), 0);
  }
  TapSet layer(int layer, const TapMatrix& input) override {
    rows_.at(static_cast<std::size_t>(layer)) += input.rows();
    return FakePath::layer(layer, input);
  }
  std::map<std::string, Headroom> headroom(int layer) const override {
    if (layer >= static_cast<int>(rows_.size())) return {};
    Headroom h;
    h.max_abs = 1;
    h.max_finite = 448;
    h.n_values = rows_[static_cast<std::size_t>(layer)];
    h.n_saturated = rows_[static_cast<std::size_t>(layer)];
    h.rounded = true;
    return {{"k_cache.fp8", h}};
  }

 private:
  std::vector<std::int64_t> rows_;
};

// A bf16 fake that records, for every layer() call, its rows and the keep_taps hint then
// in force (empty: every tap).
class HintRecordingFakePath final : public FakePath {
 public:
  using FakePath::FakePath;
  void keep_taps(std::optional<std::vector<Tap>> taps) override { hint_ = std::move(taps); }
  TapSet layer(int layer, const TapMatrix& input) override {
    calls().push_back({static_cast<int>(input.rows()), hint_.value_or(std::vector<Tap>{})});
    return FakePath::layer(layer, input);
  }
  struct Call {
    int rows;
    std::vector<Tap> hint;
  };
  static std::vector<Call>& calls() {
    static std::vector<Call> c;
    return c;
  }

 private:
  std::optional<std::vector<Tap>> hint_;
};

PathMaker fake_maker() {
  return [](const std::string& name, const std::string&) -> std::unique_ptr<Path> {
    if (name == "recording") return std::make_unique<HintRecordingFakePath>(name, kModel, FakePath::Kind::Bf16);
    if (name == "capable") return std::make_unique<CapableFakePath>(name, kModel, FakePath::Kind::Bf16);
    if (name == "counting") return std::make_unique<RowCountingFakePath>(name, kModel, FakePath::Kind::Bf16);
    if (name == "ref64-cpu") return std::make_unique<FakePath>(name, kModel, FakePath::Kind::Exact);
    if (name == "ref32-cpu" || name == "same") return std::make_unique<FakePath>(name, kModel, FakePath::Kind::Float32);
    if (name == "bf16") return std::make_unique<FakePath>(name, kModel, FakePath::Kind::Bf16);
    if (name == "nan") return std::make_unique<FakePath>(name, kModel, FakePath::Kind::Bf16, 1);
    throw InputError("", "unknown fake path " + name);
  };
}

PathSlot slot(const std::string& name, DType dtype, const std::string& role = "other") {
  PathSlot s;
  s.requested.name = name;
  s.name = name;
  s.role = role;
  s.dtype = dtype;
  return s;
}

RunConfig config(int batch = 2, int n = 7) {
  RunConfig cfg;
  cfg.n_layers = kModel.layers;
  for (int b = 0; b < batch; ++b) {
    std::vector<std::int32_t> seq;
    for (int t = 0; t < n; ++t) seq.push_back((5 * b + 3 * t + 1) % kModel.vocab);
    cfg.tokens.push_back(seq);
  }
  cfg.phase = {Phase::Prefill, n, 0};
  cfg.reference = "ref32-cpu";
  return cfg;
}

const int kQ = layer_tap_index(Tap::q);
const int kResid = layer_tap_index(Tap::resid_out);

TEST(Driver, TablesHoldEveryLayerAndEveryTapBothSidesExpose) {
  const auto r = run_side_by_side(config(), {slot("bf16", DType::BF16)}, fake_maker());
  ASSERT_EQ(r.paths.size(), 1u);
  for (const ModeTable* t : {&*r.paths[0].isolated, &*r.paths[0].propagated}) {
    ASSERT_EQ(t->layers.size(), 3u);
    for (int l = 0; l < 3; ++l) {
      for (int c = 0; c < kNumLayerTaps; ++c) {
        const Tap tap = kLayerTaps[c];
        const bool shared = tap == Tap::attn_norm || tap == Tap::q || tap == Tap::act || tap == Tap::resid_out;
        EXPECT_EQ(t->layers[l][c].has_value(), shared) << l << " " << tap_name(tap);
        EXPECT_EQ(t->gate[l][c], shared ? 1 : -1);
      }
    }
    EXPECT_TRUE(t->head[0] && t->head[1]);
  }
  EXPECT_EQ(r.measured_rows, 14);
  EXPECT_EQ(r.gate_failures, 0);
}

TEST(Driver, Bf16RoundingErrorsLandInTheBf16Band) {
  const auto r = run_side_by_side(config(), {slot("bf16", DType::BF16)}, fake_maker());
  const auto& iso = *r.paths[0].isolated;
  for (int l = 0; l < 3; ++l) {
    // One bf16 rounding (2^-9 relative at most, ~2^-9/sqrt(3) rms) per tap, a few in a row.
    const double e = iso.layers[l][kQ]->rel_l2;
    EXPECT_GT(e, 1e-4) << l;
    EXPECT_LT(e, 1e-2) << l;
    EXPECT_LE(iso.layers[l][kQ]->ulp_p50, 2);
  }
  const auto& a = r.paths[0].amplification;
  for (int l = 0; l < 3; ++l) {
    EXPECT_TRUE(std::isfinite(a.amplification[l]) && a.amplification[l] > 0) << l;
    EXPECT_TRUE(std::isfinite(a.layer_gain[l])) << l;
  }
  // Layer 0 sees the same input in both modes: its propagated error is its local one.
  EXPECT_DOUBLE_EQ(a.amplification[0], 1.0);
  EXPECT_TRUE(std::isfinite(a.end_to_end));
  ASSERT_TRUE(r.paths[0].end_to_end);
  EXPECT_EQ(r.paths[0].end_to_end->kl.size(), 14u);
  EXPECT_LT(r.paths[0].end_to_end->kl_mean, 1e-3);
}

TEST(Driver, APathIdenticalToTheReferenceHasZeroErrorAndPasses) {
  const auto r = run_side_by_side(config(), {slot("same", DType::F32)}, fake_maker());
  for (int l = 0; l < 3; ++l) EXPECT_EQ(r.paths[0].propagated->layers[l][kResid]->rel_l2, 0.0);
  EXPECT_EQ(r.gate_failures, 0);
}

TEST(Driver, NanAtOneLayerIsTheFirstDivergentOp) {
  auto cfg = config();
  cfg.dump_failing = true;
  const auto r = run_side_by_side(cfg, {slot("nan", DType::BF16)}, fake_maker());
  const auto& t = *r.paths[0].propagated;
  EXPECT_EQ(t.first_divergent_layer, 1);
  ASSERT_TRUE(t.first_divergent_tap);
  EXPECT_EQ(*t.first_divergent_tap, Tap::act);
  EXPECT_EQ(t.layers[1][layer_tap_index(Tap::act)]->nan_count, 1);
  EXPECT_GT(r.gate_failures, 0);
  ASSERT_FALSE(r.paths[0].dumps.empty());
  EXPECT_EQ(r.paths[0].dumps.front().layer, 1);
}

TEST(Driver, DecodeMeasuresOnlyTheDecodeSteps) {
  auto cfg = config(2, 8);
  cfg.phase = {Phase::Decode, 5, 3};
  cfg.greedy_steps = 0;
  const auto r = run_side_by_side(cfg, {slot("bf16", DType::BF16)}, fake_maker());
  EXPECT_EQ(r.measured_rows, 6);  // batch 2 x 3 steps
  EXPECT_EQ(r.paths[0].end_to_end->kl.size(), 6u);
  EXPECT_TRUE(r.paths[0].propagated->layers[2][kResid]);
}

TEST(Driver, DecodeAsksOnlyResidOutOfTheKvPrefillChunk) {
  auto cfg = config(2, 8);
  cfg.phase = {Phase::Decode, 5, 3};
  cfg.greedy_steps = 0;
  cfg.timing.enabled = false;  // its second forward asks resid_out only, every chunk
  HintRecordingFakePath::calls().clear();
  run_side_by_side(cfg, {slot("recording", DType::BF16)}, fake_maker());
  const auto& calls = HintRecordingFakePath::calls();
  ASSERT_FALSE(calls.empty());
  int prefill = 0, steps = 0;
  for (const auto& c : calls) {
    if (c.rows == 2 * 5) {
      ++prefill;
      EXPECT_EQ(c.hint, std::vector<Tap>{Tap::resid_out}) << "the KV prefill is not measured";
    } else {
      ++steps;
      EXPECT_EQ(c.rows, 2);
      EXPECT_TRUE(c.hint.empty()) << "a measured decode step reads every tap";
    }
  }
  EXPECT_EQ(steps, 3 * prefill);  // per layer and mode: one prefill chunk, three steps
}

TEST(Driver, PerturbationSensitivityIsOneWhereInjectedAndUndefinedBefore) {
  auto cfg = config();
  cfg.modes.perturb = PerturbSpec{1, Tap::q, 1e-3};
  cfg.seeds.perturbation = 7;
  const auto r = run_side_by_side(cfg, {slot("bf16", DType::BF16)}, fake_maker());
  ASSERT_TRUE(r.perturb);
  const auto& s = r.perturb->sensitivity;
  EXPECT_TRUE(std::isnan(s[0][kResid]));
  EXPECT_TRUE(std::isnan(s[1][layer_tap_index(Tap::attn_norm)]));
  // rel * rms(x) * n with n ~ N(0,1) over 14 x 24 values: ||n|| / sqrt(N) within ~10%.
  EXPECT_NEAR(s[1][kQ], 1.0, 0.15);
  EXPECT_GT(s[2][kResid], 0);
  EXPECT_TRUE(std::isfinite(r.perturb->head_sensitivity[1]));
}

TEST(Driver, AReferenceWithoutThePerturbationCapabilityIsPerturbedThroughARef32CpuPair) {
  auto cfg = config();
  cfg.reference = "ref64-cpu";  // the fake ref64 does not claim the capability
  cfg.modes.perturb = PerturbSpec{1, Tap::q, 1e-3};
  cfg.seeds.perturbation = 7;
  const auto r = run_side_by_side(cfg, {slot("bf16", DType::BF16)}, fake_maker());
  ASSERT_TRUE(r.perturb);
  EXPECT_EQ(r.perturb->path, "ref32-cpu");
  EXPECT_NEAR(r.perturb->sensitivity[1][kQ], 1.0, 0.15);
}

TEST(Driver, AnExceptionFromAPathThatClaimsPerturbationIsABugThatPropagates) {
  auto cfg = config();
  cfg.reference = "capable";
  cfg.modes.perturb = PerturbSpec{1, Tap::q, 1e-3};
  EXPECT_THROW(run_side_by_side(cfg, {slot("bf16", DType::BF16)}, fake_maker()), std::logic_error);
}

TEST(Driver, HeadroomIsRecordedForPathsWithTheCapabilityOnly) {
  const auto r = run_side_by_side(config(), {slot("capable", DType::BF16), slot("bf16", DType::BF16)}, fake_maker());
  const RecipeHeadroom& h = r.paths[0].recipe_headroom;
  ASSERT_EQ(h.points, std::vector<std::string>{"q"});
  ASSERT_EQ(h.by_layer.size(), static_cast<std::size_t>(kModel.layers + 1));  // the head last
  EXPECT_DOUBLE_EQ(h.by_layer[1][0].ratio, 4.0 / 65504);
  EXPECT_DOUBLE_EQ(h.by_layer[2][0].saturated, 2.0);
  EXPECT_TRUE(r.paths[1].recipe_headroom.points.empty());
}

// Greedy decoding's own headroom (issue 17: static FP8 scales from the prefill clip only
// on later keys): read after the decode, counting its rows alone, the measured run's
// headroom untouched.
TEST(Driver, GreedyHeadroomCountsTheGreedyStepsAloneBesideTheMeasuredRuns) {
  auto cfg = config(2, 4);
  cfg.greedy_steps = 5;
  const auto r = run_side_by_side(cfg, {slot("counting", DType::BF16), slot("bf16", DType::BF16)}, fake_maker());
  const RecipeHeadroom& run = r.paths[0].recipe_headroom;
  const RecipeHeadroom& greedy = r.paths[0].greedy_headroom;
  ASSERT_EQ(run.points, std::vector<std::string>{"k_cache.fp8"});
  ASSERT_EQ(greedy.points, std::vector<std::string>{"k_cache.fp8"});
  ASSERT_EQ(greedy.by_layer.size(), static_cast<std::size_t>(kModel.layers + 1));
  for (int l = 0; l < kModel.layers; ++l) {
    // The measured run: 2 sequences x 4 tokens. Greedy: sequence 0's 4 prompt tokens,
    // then one token for each of the 4 steps after the first.
    EXPECT_DOUBLE_EQ(run.by_layer[static_cast<std::size_t>(l)][0].saturated, 8.0) << "layer " << l;
    EXPECT_DOUBLE_EQ(greedy.by_layer[static_cast<std::size_t>(l)][0].saturated, 8.0 / 2 + 4) << "layer " << l;
  }
  EXPECT_TRUE(std::isnan(greedy.by_layer.back()[0].saturated));  // the head has no KV cache
  EXPECT_TRUE(r.paths[1].greedy_headroom.points.empty());
  // The summary names both counts (3 layers x 8 rows, 3 x 8).
  SummaryInput in;
  in.n_layers = kModel.layers;
  in.result = &r;
  in.greedy_steps = cfg.greedy_steps;
  const std::string text = format_summary(in);
  EXPECT_NE(text.find("FP8 values clipped at 448: 24 in the measured run, 24 in greedy decoding"), std::string::npos)
      << text;
  // Without greedy steps there is nothing to read.
  cfg.greedy_steps = 0;
  const auto none = run_side_by_side(cfg, {slot("counting", DType::BF16)}, fake_maker());
  EXPECT_TRUE(none.paths[0].greedy_headroom.points.empty());
  EXPECT_FALSE(none.paths[0].recipe_headroom.points.empty());
}

TEST(Driver, GreedyDecodingOfAnIdenticalPathNeverMismatches) {
  auto cfg = config(1, 4);
  cfg.greedy_steps = 5;
  const auto r = run_side_by_side(cfg, {slot("same", DType::F32)}, fake_maker());
  EXPECT_EQ(r.reference_greedy.size(), 5u);
  EXPECT_EQ(r.paths[0].greedy_tokens, r.reference_greedy);
  EXPECT_EQ(r.paths[0].greedy_first_mismatch, -1);
}

TEST(Driver, Ref64NoiseFloorComparesTheReferenceWithFp64) {
  auto cfg = config();
  cfg.ref64 = true;
  const auto r = run_side_by_side(cfg, {slot("bf16", DType::BF16)}, fake_maker());
  ASSERT_TRUE(r.noise_floor_propagated);
  const double ref_error = r.noise_floor_propagated->layers[2][kResid]->rel_l2;
  EXPECT_GT(ref_error, 0);
  EXPECT_LT(ref_error, 1e-6);  // float rounding only
  // bf16 is ~2^16 times coarser than float: its noise-floor ratio is far above 1.
  EXPECT_GT(r.paths[0].propagated->layers[2][kResid]->noise_floor_ratio, 100);
  EXPECT_EQ(r.noise_floor_propagated->gate_failures, 0);
}

TEST(Driver, CpuPathsGetSteadyClockLayerTimes) {
  const auto r = run_side_by_side(config(), {slot("bf16", DType::BF16)}, fake_maker());
  EXPECT_EQ(r.paths[0].timing.clock, "cpu-steady-clock");
  for (double ms : r.paths[0].timing.layer_ms) EXPECT_TRUE(std::isfinite(ms) && ms >= 0);
}

TEST(Driver, ProgressReachesTheTotal) {
  auto cfg = config();
  int last = 0, total = 0;
  cfg.progress = [&](int d, int t) { last = d, total = t; };
  run_side_by_side(cfg, {slot("bf16", DType::BF16), slot("same", DType::F32)}, fake_maker());
  EXPECT_EQ(total, 3 * 3 + 1);
  EXPECT_EQ(last, total);
}

RunRecord record_of(const RunResult& r, const RunConfig& cfg) {
  RunRecord rec;
  rec.n_layers = cfg.n_layers;
  rec.tokens = cfg.tokens;
  rec.result = &r;
  rec.attrs = {{"git_sha", std::string("abc")}, {"n_layers", 3LL}, {"ref64", RootAttr::Flag{true}}};
  return rec;
}

TEST(RunWriter, WritesTheDocumentedLayout) {
  auto cfg = config();
  cfg.ref64 = true;
  cfg.modes.perturb = PerturbSpec{0, Tap::q, 1e-3};
  const auto r = run_side_by_side(cfg, {slot("bf16", DType::BF16)}, fake_maker());
  const auto file = test::scratch_dir() / "run.h5";
  write_run_file(file, record_of(r, cfg));
  const auto root = results::read_h5_tree(file);
  EXPECT_EQ(root.attr_string("format"), "fusecheck-run");
  EXPECT_EQ(root.attr_number("format_version"), 1);
  EXPECT_EQ(root.attr_string("git_sha"), "abc");
  EXPECT_EQ(root.attr_number("ref64"), 1);
  ASSERT_TRUE(root.dataset("taps"));
  EXPECT_EQ(root.dataset("taps")->strings.size(), 17u);
  const auto* rel = root.dataset("paths/bf16/propagated/rel_l2");
  ASSERT_TRUE(rel);
  EXPECT_EQ(rel->dims, (std::vector<std::uint64_t>{3, 17}));
  EXPECT_DOUBLE_EQ(rel->numbers[2 * 17 + kResid], r.paths[0].propagated->layers[2][kResid]->rel_l2);
  EXPECT_TRUE(std::isnan(rel->numbers[layer_tap_index(Tap::k)]));  // not exposed
  ASSERT_TRUE(root.dataset("paths/bf16/propagated/head/rel_l2"));
  EXPECT_EQ(root.dataset("paths/bf16/propagated/gate")->dims, (std::vector<std::uint64_t>{3, 17}));
  EXPECT_TRUE(root.dataset("paths/bf16/amplification/amplification"));
  EXPECT_TRUE(root.dataset("reference/noise_floor/isolated/rel_l2"));
  EXPECT_TRUE(root.dataset("end_to_end/bf16/kl"));
  EXPECT_TRUE(root.dataset("timing/bf16/layer_ms"));
  EXPECT_TRUE(root.dataset("perturb/sensitivity"));
  EXPECT_EQ(root.dataset("tokens")->dims, (std::vector<std::uint64_t>{2, 7}));
}

TEST(RunWriter, AFailedWriteLeavesTheEarlierFileIntact) {
  const auto cfg = config();
  const auto r = run_side_by_side(cfg, {slot("bf16", DType::BF16)}, fake_maker());
  const auto dir = test::scratch_dir();
  const auto file = dir / "run.h5";
  { std::ofstream(file) << "earlier results"; }
  auto rec = record_of(r, cfg);
  rec.attrs.push_back({"", std::string("an attribute without a name cannot be written")});
  EXPECT_ANY_THROW(write_run_file(file, rec));
  std::ifstream in(file);
  std::string text;
  std::getline(in, text);
  EXPECT_EQ(text, "earlier results");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1);  // no temp left
}

}  // namespace
}  // namespace fusecheck::run
