// The driver's device route (docs/gpu.md "Tap metrics on the device") on fake paths whose
// "device" is host memory and whose device metrics are the CPU route's own functions: so
// the device route must give the host route's numbers bit for bit, and any tap it reads
// after its path's next call (the ABI's validity rule, enforced here by NaN-filling the
// last call's taps) or any input it takes from the wrong instance shows as a difference.
// Mixed runs (a host-only path among device ones), --dump-failing, perturbation, the
// ref64 noise floor and the decode fallback to the host route are covered.
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

#include "harness/core/error.h"
#include "harness/run/driver.h"
#include "tests/run/fake_path.h"

namespace fusecheck::run {
namespace {

using test::FakeModel;
using test::FakePath;

const FakeModel kModel{24, 37, 3};
const int kFakeDomain = 0;  // its address names the fake "plug-in"

// FakePath with device taps: the taps of the last call live in buffers of its own, which
// the next call first fills with NaN (after reading its input, which may be one of them).
class DeviceFakePath final : public FakePath {
 public:
  DeviceFakePath(std::string name, FakeModel m, Kind kind) : FakePath(std::move(name), m, kind) {}
  PathCapabilities capabilities() const override {
    return {.perturbation = name().rfind("ref", 0) == 0, .device_taps = true};
  }
  DeviceDomain device_domain() const override { return {&kFakeDomain, 0}; }
  DeviceTapSet layer_on_device(int layer, const TapInput& in) override {
    const TapMatrix input = read(in);
    return publish(FakePath::layer(layer, input));
  }
  DeviceTapSet head_on_device(const TapInput& in) override {
    const TapMatrix input = read(in);
    return publish(FakePath::head(input));
  }
  TapMatrix to_host(const DeviceTap& t) override { return view(t); }
  DeviceTapSummary device_metrics(const DeviceTap& ref, const DeviceTap& path, const DeviceTap* truth, DType dtype,
                                  double atol, double rtol) override {
    const TapMatrix r = view(ref), p = view(path);
    const TapMetrics m = compute_metrics(r, p, dtype, Tolerance{atol, rtol});
    DeviceTapSummary d{m.max_abs,       m.max_rel,  m.rel_l2,   m.cosine,         m.ulp_p50,
                       m.ulp_p99,       m.ulp_max,  m.frac_outside, m.nan_count,  m.inf_count,
                       m.ref_nonfinite, m.ref_norm, m.headroom, m.overflow_count, m.saturation_count,
                       relative_l2(r, p), kNaN, kNaN};
    if (truth) {
      const TapMatrix t = view(*truth);
      d.truth_rel_l2_path = relative_l2(t, p);
      d.truth_rel_l2_ref = relative_l2(t, r);
    }
    ++metric_calls();
    return d;
  }
  DeviceNextToken device_next_token(const DeviceTap& ref, const DeviceTap& path) override {
    const NextTokenAgreement a = next_token_agreement(view(ref), view(path));
    return {a.kl, a.ref_margin, a.top1_match};
  }
  static int& metric_calls() {
    static int n = 0;
    return n;
  }

 private:
  static TapMatrix view(const DeviceTap& t) {
    if (t.domain != nullptr && t.domain != &kFakeDomain) throw std::logic_error("a tap of another domain");
    TapMatrix m(t.rows, t.cols);
    const auto* p = static_cast<const double*>(t.data);
    for (Eigen::Index r = 0; r < t.rows; ++r)
      for (Eigen::Index c = 0; c < t.cols; ++c) m(r, c) = p[r * t.row_stride + c];
    return m;
  }
  TapMatrix read(const TapInput& in) {
    TapMatrix m = in.host ? *in.host : view(*in.device);
    for (auto& [tap, values] : last_) values.setConstant(std::numeric_limits<double>::quiet_NaN());
    return m;
  }
  DeviceTapSet publish(TapSet taps) {
    last_ = std::move(taps);
    DeviceTapSet out;
    for (auto& [tap, values] : last_) {
      DeviceTap t;
      t.data = values.data();
      t.dtype = DType::F64;
      t.rows = values.rows(), t.cols = values.cols(), t.row_stride = values.cols();
      t.device = 0;
      t.domain = &kFakeDomain;
      out[tap] = t;
    }
    return out;
  }
  TapSet last_;
};

PathMaker maker() {
  return [](const std::string& name, const std::string&) -> std::unique_ptr<Path> {
    if (name == "ref32-dev") return std::make_unique<DeviceFakePath>(name, kModel, FakePath::Kind::Float32);
    if (name == "ref64-dev") return std::make_unique<DeviceFakePath>(name, kModel, FakePath::Kind::Exact);
    if (name == "bf16-dev") return std::make_unique<DeviceFakePath>(name, kModel, FakePath::Kind::Bf16);
    if (name == "f32-dev") return std::make_unique<DeviceFakePath>(name, kModel, FakePath::Kind::Float32);
    if (name == "bf16-host") return std::make_unique<FakePath>(name, kModel, FakePath::Kind::Bf16);
    if (name == "ref32-cpu") return std::make_unique<FakePath>(name, kModel, FakePath::Kind::Float32);
    throw InputError("", "unknown fake path " + name);
  };
}

PathSlot slot(const std::string& name, DType dtype) {
  PathSlot s;
  s.requested.name = name;
  s.name = name;
  s.role = "other";
  s.dtype = dtype;
  return s;
}

RunConfig config(bool device) {
  RunConfig cfg;
  cfg.n_layers = kModel.layers;
  for (int b = 0; b < 2; ++b) {
    std::vector<std::int32_t> seq;
    for (int t = 0; t < 7; ++t) seq.push_back((5 * b + 3 * t + 1) % kModel.vocab);
    cfg.tokens.push_back(seq);
  }
  cfg.phase = {Phase::Prefill, 7, 0};
  cfg.reference = "ref32-dev";
  cfg.ref64 = true;
  cfg.ref64_path = "ref64-dev";
  cfg.modes.perturb = PerturbSpec{1, Tap::q, 1e-3};
  cfg.seeds.perturbation = 7;
  cfg.device_metrics = device;
  return cfg;
}

// Bitwise, NaN equal to NaN.
void expect_same(double a, double b, const std::string& where) {
  if (std::isnan(b)) {
    EXPECT_TRUE(std::isnan(a)) << where << ": " << a << " vs NaN";
  } else {
    EXPECT_EQ(a, b) << where;
  }
}

void expect_same_table(const ModeTable& a, const ModeTable& b, const std::string& what) {
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (std::size_t l = 0; l < a.layers.size(); ++l) {
    for (int c = 0; c < kNumLayerTaps; ++c) {
      ASSERT_EQ(a.layers[l][c].has_value(), b.layers[l][c].has_value()) << what << " layer " << l << " tap " << c;
      if (!a.layers[l][c]) continue;
      for (const auto& f : kMetricFields) {
        expect_same((*a.layers[l][c]).*f.member, (*b.layers[l][c]).*f.member,
                    what + " layer " + std::to_string(l) + " tap " + std::to_string(c) + " " + std::string(f.name));
      }
    }
    EXPECT_EQ(a.gate[l], b.gate[l]) << what << " layer " << l;
  }
  for (int c = 0; c < kNumHeadTaps; ++c) {
    ASSERT_EQ(a.head[c].has_value(), b.head[c].has_value()) << what << " head " << c;
    if (!a.head[c]) continue;
    for (const auto& f : kMetricFields) {
      expect_same((*a.head[c]).*f.member, (*b.head[c]).*f.member, what + " head " + std::string(f.name));
    }
  }
  EXPECT_EQ(a.first_divergent_layer, b.first_divergent_layer) << what;
  EXPECT_EQ(a.gate_failures, b.gate_failures) << what;
}

void expect_same_results(const RunResult& dev, const RunResult& host) {
  ASSERT_EQ(dev.paths.size(), host.paths.size());
  for (std::size_t i = 0; i < dev.paths.size(); ++i) {
    const PathResult &a = dev.paths[i], &b = host.paths[i];
    SCOPED_TRACE(a.slot.name);
    expect_same_table(*a.isolated, *b.isolated, "isolated");
    expect_same_table(*a.propagated, *b.propagated, "propagated");
    ASSERT_TRUE(a.end_to_end && b.end_to_end);
    EXPECT_EQ(a.end_to_end->kl, b.end_to_end->kl);
    EXPECT_EQ(a.end_to_end->top1_match, b.end_to_end->top1_match);
    EXPECT_EQ(a.end_to_end->ref_margin, b.end_to_end->ref_margin);
    expect_same(a.end_to_end->kl_mean, b.end_to_end->kl_mean, "kl_mean");
    expect_same(a.end_to_end->top1_agreement, b.end_to_end->top1_agreement, "top1");
    EXPECT_EQ(a.amplification.propagated_error, b.amplification.propagated_error);
    ASSERT_EQ(a.dumps.size(), b.dumps.size());
    for (std::size_t d = 0; d < a.dumps.size(); ++d) {
      EXPECT_EQ(a.dumps[d].layer, b.dumps[d].layer);
      EXPECT_EQ(a.dumps[d].tap, b.dumps[d].tap);
      EXPECT_TRUE(a.dumps[d].reference == b.dumps[d].reference);
      EXPECT_TRUE(a.dumps[d].path == b.dumps[d].path);
    }
  }
  expect_same_table(*dev.noise_floor_isolated, *host.noise_floor_isolated, "noise floor isolated");
  expect_same_table(*dev.noise_floor_propagated, *host.noise_floor_propagated, "noise floor propagated");
  ASSERT_TRUE(dev.perturb && host.perturb);
  for (std::size_t l = 0; l < host.perturb->sensitivity.size(); ++l) {
    for (int c = 0; c < kNumLayerTaps; ++c) {
      expect_same(dev.perturb->sensitivity[l][c], host.perturb->sensitivity[l][c], "sensitivity");
    }
  }
  for (int c = 0; c < kNumHeadTaps; ++c) {
    expect_same(dev.perturb->head_sensitivity[c], host.perturb->head_sensitivity[c], "head sensitivity");
  }
  EXPECT_EQ(dev.measured_rows, host.measured_rows);
  EXPECT_EQ(dev.gate_failures, host.gate_failures);
}

TEST(DeviceRoute, GivesTheHostRoutesNumbersBitForBit) {
  const std::vector<PathSlot> slots = {slot("bf16-dev", DType::BF16), slot("f32-dev", DType::F32)};
  DeviceFakePath::metric_calls() = 0;
  const RunResult dev = run_side_by_side(config(true), slots, maker());
  EXPECT_TRUE(dev.device_metrics);
  EXPECT_GT(DeviceFakePath::metric_calls(), 0);  // the device route did run
  DeviceFakePath::metric_calls() = 0;
  const RunResult host = run_side_by_side(config(false), slots, maker());
  EXPECT_FALSE(host.device_metrics);
  EXPECT_EQ(DeviceFakePath::metric_calls(), 0);
  expect_same_results(dev, host);
  EXPECT_GT(host.paths[0].propagated->layers[2][layer_tap_index(Tap::resid_out)]->rel_l2, 0);  // not all zeros
}

TEST(DeviceRoute, AHostOnlyPathInTheRunKeepsTheHostRoute) {
  const std::vector<PathSlot> slots = {slot("bf16-host", DType::BF16), slot("bf16-dev", DType::BF16)};
  const RunResult dev = run_side_by_side(config(true), slots, maker());
  const RunResult host = run_side_by_side(config(false), slots, maker());
  EXPECT_TRUE(dev.device_metrics);
  expect_same_results(dev, host);
  // The host-only path computes what its device twin computes.
  expect_same_table(*dev.paths[0].propagated, *dev.paths[1].propagated, "host vs device twin");
}

TEST(DeviceRoute, DumpFailingCopiesTheFailingCellsBack) {
  auto dev_cfg = config(true), host_cfg = config(false);
  GateSpec strict;
  strict.all.rel_l2 = 1e-12;  // every bf16 cell fails
  dev_cfg.gates = host_cfg.gates = strict;
  dev_cfg.dump_failing = host_cfg.dump_failing = true;
  const std::vector<PathSlot> slots = {slot("bf16-dev", DType::BF16)};
  const RunResult dev = run_side_by_side(dev_cfg, slots, maker());
  const RunResult host = run_side_by_side(host_cfg, slots, maker());
  ASSERT_FALSE(host.paths[0].dumps.empty());
  expect_same_results(dev, host);
}

TEST(DeviceRoute, DecodeKeepsTheHostRoute) {
  auto cfg = config(true);
  cfg.phase = {Phase::Decode, 4, 3};
  DeviceFakePath::metric_calls() = 0;
  const RunResult r = run_side_by_side(cfg, {slot("bf16-dev", DType::BF16)}, maker());
  EXPECT_FALSE(r.device_metrics);
  EXPECT_EQ(DeviceFakePath::metric_calls(), 0);
}

}  // namespace
}  // namespace fusecheck::run
