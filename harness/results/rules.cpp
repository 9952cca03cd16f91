// Regression rules: defaults and the YAML/JSON rules file (see rules.h, docs/nightly.md).
#include "harness/results/rules.h"

#include <cmath>
#include <set>

#include <fmt/core.h>
#include <yaml-cpp/yaml.h>

#include "harness/core/error.h"

namespace fusecheck::results {

const GrowthRule* CompareRules::rule_for(const std::string& tap, const std::string& metric) const {
  if (auto t = tap_overrides.find(tap); t != tap_overrides.end()) {
    if (auto m = t->second.find(metric); m != t->second.end()) return &m->second;
  }
  auto m = metrics.find(metric);
  return m == metrics.end() ? nullptr : &m->second;
}

CompareRules default_rules() {
  CompareRules r;
  // 25%: run-to-run wobble of a deterministic path is zero and of a GPU path with
  // split reductions a few percent; a real recipe change (one more bf16 rounding)
  // moves rel_l2 by 40% or more. Under 1e-6 is FP32 round-off, never a regression.
  r.metrics["rel_l2"] = {1.25, 1e-6};
  return r;
}

namespace {

class RulesReader {
 public:
  explicit RulesReader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw InputError(file_, fmt::format("{}: {}", key, what));
  }

  void only_keys(const YAML::Node& map, const std::string& where, std::set<std::string> allowed) const {
    if (!map.IsMap()) fail(where, "expected a mapping");
    for (const auto& kv : map) {
      auto key = kv.first.as<std::string>();
      if (!allowed.count(key)) {
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
        fail(where.empty() ? key : where + "." + key, fmt::format("unknown key (expected one of: {})", list));
      }
    }
  }

  double number(const YAML::Node& n, const std::string& key, double lo) const {
    double v = 0;
    try {
      v = n.as<double>();
    } catch (const YAML::Exception&) {
      fail(key, "expected a number");
    }
    if (!std::isfinite(v) || v < lo) fail(key, fmt::format("must be a finite number >= {}", lo));
    return v;
  }

  bool boolean(const YAML::Node& n, const std::string& key) const {
    try {
      return n.as<bool>();
    } catch (const YAML::Exception&) {
      fail(key, "expected true or false");
    }
  }

  GrowthRule growth(const YAML::Node& n, const std::string& key, GrowthRule r) const {
    only_keys(n, key, {"factor", "floor"});
    if (n["factor"]) r.factor = number(n["factor"], key + ".factor", 1.0);
    if (n["floor"]) r.floor = number(n["floor"], key + ".floor", 0.0);
    return r;
  }

  void metric_map(const YAML::Node& n, const std::string& key, std::map<std::string, GrowthRule>& out,
                  const std::map<std::string, GrowthRule>& defaults) const {
    if (!n.IsMap()) fail(key, "expected a mapping of metric names");
    for (const auto& kv : n) {
      auto metric = kv.first.as<std::string>();
      if (!known_metrics().count(metric)) fail(key + "." + metric, "unknown metric");
      auto base = defaults.count(metric) ? defaults.at(metric) : GrowthRule{};
      out[metric] = growth(kv.second, key + "." + metric, base);
    }
  }

  // Larger-is-worse metrics of docs/results-format.md (cosine and the counts are judged
  // by their own rules).
  static const std::set<std::string>& known_metrics() {
    static const std::set<std::string> m = {"max_abs", "max_rel", "rel_l2", "ulp_p50", "ulp_p99",
                                            "ulp_max", "frac_outside", "noise_floor_ratio", "headroom"};
    return m;
  }

 private:
  std::string file_;
};

}  // namespace

CompareRules load_rules(const std::filesystem::path& file) {
  const std::string name = file.string();
  RulesReader rd(name);
  YAML::Node doc;
  try {
    doc = YAML::LoadFile(name);
  } catch (const YAML::BadFile&) {
    throw InputError(name, "cannot read the rules file");
  } catch (const YAML::Exception& e) {
    throw InputError(name, fmt::format("not valid YAML/JSON: {}", e.msg));
  }
  CompareRules r = default_rules();
  if (doc.IsNull()) return r;
  rd.only_keys(doc, "", {"metrics", "taps", "regressions", "end_to_end", "timing"});
  if (auto m = doc["metrics"]) rd.metric_map(m, "metrics", r.metrics, r.metrics);
  if (auto taps = doc["taps"]) {
    if (!taps.IsMap()) rd.fail("taps", "expected a mapping of tap names");
    for (const auto& kv : taps) {
      auto tap = kv.first.as<std::string>();
      rd.metric_map(kv.second, "taps." + tap, r.tap_overrides[tap], r.metrics);
    }
  }
  if (auto g = doc["regressions"]) {
    rd.only_keys(g, "regressions", {"new_nonfinite", "gate_newly_failing", "verdict_change", "lost_tap"});
    if (g["new_nonfinite"]) r.new_nonfinite_is_regression = rd.boolean(g["new_nonfinite"], "regressions.new_nonfinite");
    if (g["gate_newly_failing"]) r.gate_newly_failing_is_regression = rd.boolean(g["gate_newly_failing"], "regressions.gate_newly_failing");
    if (g["verdict_change"]) r.verdict_change_is_regression = rd.boolean(g["verdict_change"], "regressions.verdict_change");
    if (g["lost_tap"]) r.lost_tap_is_regression = rd.boolean(g["lost_tap"], "regressions.lost_tap");
  }
  if (auto e = doc["end_to_end"]) {
    rd.only_keys(e, "end_to_end", {"kl_mean", "kl_p99", "top1_drop", "greedy_earlier"});
    if (e["kl_mean"]) r.kl_mean = rd.growth(e["kl_mean"], "end_to_end.kl_mean", r.kl_mean);
    if (e["kl_p99"]) r.kl_p99 = rd.growth(e["kl_p99"], "end_to_end.kl_p99", r.kl_p99);
    if (e["top1_drop"]) r.top1_drop = rd.number(e["top1_drop"], "end_to_end.top1_drop", 0.0);
    if (e["greedy_earlier"]) r.greedy_earlier_is_regression = rd.boolean(e["greedy_earlier"], "end_to_end.greedy_earlier");
  }
  if (auto t = doc["timing"]) {
    rd.only_keys(t, "timing", {"min_gap_relative", "min_gap_absolute_ms", "same_floor_relative", "min_repetitions",
                               "slower_is_regression", "ambiguous_is_regression"});
    if (t["min_gap_relative"]) r.timing.min_gap_relative = rd.number(t["min_gap_relative"], "timing.min_gap_relative", 0.0);
    if (t["min_gap_absolute_ms"]) r.timing.min_gap_absolute = rd.number(t["min_gap_absolute_ms"], "timing.min_gap_absolute_ms", 0.0);
    if (t["same_floor_relative"]) r.timing.same_floor_relative = rd.number(t["same_floor_relative"], "timing.same_floor_relative", 0.0);
    if (t["min_repetitions"]) r.timing.min_repetitions = static_cast<int>(rd.number(t["min_repetitions"], "timing.min_repetitions", 1.0));
    if (t["slower_is_regression"]) r.slower_is_regression = rd.boolean(t["slower_is_regression"], "timing.slower_is_regression");
    if (t["ambiguous_is_regression"]) r.ambiguous_is_regression = rd.boolean(t["ambiguous_is_regression"], "timing.ambiguous_is_regression");
  }
  return r;
}

}  // namespace fusecheck::results
