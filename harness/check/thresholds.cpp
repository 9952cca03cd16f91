// Thresholds file: parsing (strict about the keys the scorer uses), writing, the seed's
// --threshold flag, and the log-space ramp that turns a figure into a component score.
#include "harness/check/thresholds.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "harness/core/error.h"

namespace fusecheck::check {

namespace detail {
extern const char kDefaultThresholdsJson[];
}

namespace {

constexpr const char* kSchema = "fusecheck-thresholds/1";
constexpr const char* kRampNames[] = {"norm_ratio", "hidden_norm_gain", "qk_amplification",
                                      "model_amplification"};
// Ramps added after fusecheck-thresholds/1 files were first written: optional, off when absent.
constexpr const char* kOptionalRampNames[] = {"qk_depth_amplification", "super_weight", "final_norm_gain"};
constexpr const char* kStatusKeys[] = {"COMPATIBLE", "WARNING", "INCOMPATIBLE"};

Ramp* ramp_by_name(Thresholds& t, const std::string& name) {
  if (name == "norm_ratio") return &t.norm_ratio;
  if (name == "hidden_norm_gain") return &t.hidden_norm_gain;
  if (name == "qk_amplification") return &t.qk_amplification;
  if (name == "model_amplification") return &t.model_amplification;
  if (name == "qk_depth_amplification") return &t.qk_depth_amplification;
  if (name == "super_weight") return &t.super_weight;
  if (name == "final_norm_gain") return &t.final_norm_gain;
  return nullptr;
}

double positive_number(const nlohmann::json& j, const std::string& key, const std::string& where) {
  if (!j.contains(key) || !j.at(key).is_number()) {
    throw InputError(where, fmt::format("missing or non-numeric \"{}\"", key));
  }
  const double v = j.at(key).get<double>();
  if (!std::isfinite(v) || v <= 0) {
    throw InputError(where, fmt::format("\"{}\" must be a finite number > 0 (got {})", key, v));
  }
  return v;
}

std::string string_or_null(const nlohmann::json& j, const std::string& key, const std::string& where) {
  if (!j.contains(key)) throw InputError(where, fmt::format("missing \"{}\"", key));
  const auto& v = j.at(key);
  if (v.is_null()) return "";
  if (!v.is_string()) throw InputError(where, fmt::format("\"{}\" must be a string or null", key));
  return v.get<std::string>();
}

// {"outcome_rule": "...", "COMPATIBLE": {"runs": M, "divergent": N}, "WARNING": ..., "INCOMPATIBLE": ...}
std::array<StatusEvidence, 3> parse_evidence(const nlohmann::json& j, const std::string& where, std::string& rule) {
  if (!j.is_object()) throw InputError(where, "must be an object");
  rule = string_or_null(j, "outcome_rule", where);
  std::array<StatusEvidence, 3> out;
  for (std::size_t k = 0; k < out.size(); ++k) {
    const std::string at = fmt::format("{}.{}", where, kStatusKeys[k]);
    if (!j.contains(kStatusKeys[k]) || !j[kStatusKeys[k]].is_object()) throw InputError(at, "missing {\"runs\", \"divergent\"}");
    const auto& e = j[kStatusKeys[k]];
    for (const char* key : {"runs", "divergent"}) {
      if (!e.contains(key) || !e[key].is_number_integer() || e[key].get<long long>() < 0 ||
          e[key].get<long long>() > 1'000'000'000) {
        throw InputError(at, fmt::format("\"{}\" must be a count (integer >= 0)", key));
      }
    }
    out[k] = {e["runs"].get<int>(), e["divergent"].get<int>()};
    if (out[k].divergent > out[k].runs) throw InputError(at, "\"divergent\" exceeds \"runs\"");
  }
  return out;
}

}  // namespace

Thresholds parse_thresholds(const std::string& json_text, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::parse_error& e) {
    throw InputError(where, fmt::format("not valid JSON ({})", e.what()));
  }
  if (!j.is_object()) throw InputError(where, "a thresholds file must be a JSON object");
  if (!j.contains("schema") || j["schema"] != kSchema) {
    throw InputError(where, fmt::format("\"schema\" must be \"{}\"", kSchema));
  }
  Thresholds t;
  t.source = string_or_null(j, "source", where);
  t.created = string_or_null(j, "created", where);
  t.sweep = string_or_null(j, "sweep", where);
  if (t.source.empty()) throw InputError(where, "\"source\" must say what produced the thresholds");

  if (!j.contains("status") || !j["status"].is_object()) throw InputError(where, "missing \"status\" object");
  t.status.warning_below = positive_number(j["status"], "warning_below", where + ": status");
  t.status.incompatible_below = positive_number(j["status"], "incompatible_below", where + ": status");
  if (!(t.status.incompatible_below < t.status.warning_below && t.status.warning_below <= 1.0)) {
    throw InputError(where, "status cutoffs need 0 < incompatible_below < warning_below <= 1");
  }

  if (!j.contains("fusecheck") || !j["fusecheck"].is_object()) throw InputError(where, "missing \"fusecheck\" object");
  const auto& fc = j["fusecheck"];
  for (const auto& [key, value] : fc.items()) {
    if (!ramp_by_name(t, key)) throw InputError(where, fmt::format("unknown key \"fusecheck.{}\"", key));
  }
  auto read_ramp = [&](const char* name) {
    const std::string at = fmt::format("{}: fusecheck.{}", where, name);
    if (!fc[name].is_object()) throw InputError(at, "must be an object {\"warn\", \"fail\"}");
    Ramp* r = ramp_by_name(t, name);
    r->warn = positive_number(fc[name], "warn", at);
    r->fail = positive_number(fc[name], "fail", at);
    if (!(r->fail > r->warn)) throw InputError(at, "\"fail\" must be greater than \"warn\"");
  };
  for (const char* name : kRampNames) {
    if (!fc.contains(name)) throw InputError(fmt::format("{}: fusecheck.{}", where, name), "missing (needs {\"warn\", \"fail\"})");
    read_ramp(name);
  }
  for (const char* name : kOptionalRampNames) {
    if (fc.contains(name)) read_ramp(name);
  }
  if (j.contains("evidence")) t.evidence = parse_evidence(j["evidence"], where + ": evidence", t.outcome_rule);
  return t;
}

Thresholds load_thresholds(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(file.string(), "cannot open thresholds file");
  std::stringstream ss;
  ss << in.rdbuf();
  Thresholds t = parse_thresholds(ss.str(), file.string());
  t.file = file.string();
  return t;
}

const Thresholds& default_thresholds() {
  static const Thresholds t = [] {
    Thresholds d = parse_thresholds(detail::kDefaultThresholdsJson, "results/thresholds/default.json");
    d.file = "results/thresholds/default.json (built in)";
    return d;
  }();
  return t;
}

std::string thresholds_to_json(const Thresholds& t) {
  nlohmann::ordered_json j;
  j["schema"] = kSchema;
  j["source"] = t.source;
  j["created"] = t.created;
  j["sweep"] = t.sweep.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(t.sweep);
  j["status"] = {{"warning_below", t.status.warning_below},
                 {"incompatible_below", t.status.incompatible_below}};
  Thresholds copy = t;
  for (const char* name : kRampNames) {
    const Ramp* r = ramp_by_name(copy, name);
    j["fusecheck"][name] = {{"warn", r->warn}, {"fail", r->fail}};
  }
  for (const char* name : kOptionalRampNames) {
    const Ramp* r = ramp_by_name(copy, name);
    if (r->on()) j["fusecheck"][name] = {{"warn", r->warn}, {"fail", r->fail}};
  }
  if (t.evidence) {
    j["evidence"]["outcome_rule"] = t.outcome_rule;
    for (std::size_t k = 0; k < t.evidence->size(); ++k) {
      j["evidence"][kStatusKeys[k]] = {{"runs", (*t.evidence)[k].runs}, {"divergent", (*t.evidence)[k].divergent}};
    }
  }
  return j.dump(2) + "\n";
}

void apply_threshold_flag(Thresholds& t, double threshold) {
  if (!std::isfinite(threshold) || threshold <= 0) {
    throw InputError("--threshold", fmt::format("must be a finite number > 0 (got {})", threshold));
  }
  // The seed: MAX_SAFE_WEIGHT_RATIO = T, WARNING_WEIGHT_RATIO = 0.75 T.
  t.braidinfer.safe_ratio = threshold;
  t.braidinfer.warning_ratio = threshold * 0.75;
  t.norm_ratio = Ramp{threshold * 0.75, threshold};
  t.overrides = fmt::format("--threshold {}", threshold);
  t.evidence.reset();  // the sweep's counts belonged to the thresholds as fitted
}

const Ramp& final_norm_gain_ramp(const Thresholds& t) {
  return t.final_norm_gain.on() ? t.final_norm_gain : t.hidden_norm_gain;
}

double ramp_score(double value, const Ramp& ramp, const StatusCutoffs& cutoffs) {
  if (!ramp.on()) return 1.0;
  if (std::isnan(value)) return 0.0;
  if (value <= 0) return 1.0;             // log(0) = -inf: far on the safe side
  if (std::isinf(value)) return 0.0;      // a ratio over a zero median
  const double x = std::log(value), lw = std::log(ramp.warn), lf = std::log(ramp.fail);
  // Between warn and fail: written as a weighted mean so the figure at `warn` / `fail`
  // lands exactly on the cutoff.
  const double t = (x - lw) / (lf - lw);
  double s = cutoffs.warning_below * (1.0 - t) + cutoffs.incompatible_below * t;
  // Below warn the score keeps ranking down to sqrt(warn) (score 1: figures that far below
  // warn, in log, are what near-unit weights give), and past fail up to fail^2 (score 0),
  // however close a fitted warn lies to its fail: the statuses follow the cuts, the
  // ranking follows the figure. A warn (or fail) at or below 1 keeps the warn-fail slope.
  if (x < lw && lw > 0) s = 1.0 - (1.0 - cutoffs.warning_below) * (2.0 * x / lw - 1.0);
  if (x > lf && lf > 0) s = cutoffs.incompatible_below * (1.0 - (x - lf) / lf);
  return std::clamp(s, 0.0, 1.0);
}

}  // namespace fusecheck::check
