// The required contents of a run (see validate.h).
#include "harness/results/validate.h"

#include <cmath>
#include <sstream>

#include <fmt/core.h>

#include "harness/core/error.h"
#include "harness/results/invariance_results.h"

namespace fusecheck::results {

namespace {

constexpr const char* kModes[] = {"isolated", "propagated"};

class Validator {
 public:
  Validator(const Run& run, const std::set<std::string>& extra) : run_(run), metrics_(required_metrics()) {
    metrics_.insert(extra.begin(), extra.end());
  }

  void check() {
    const H5Node& root = run_.root();
    if (run_.n_layers() <= 0) missing("/", "a positive n_layers attribute");
    if (run_.head_taps().empty()) missing("/head_taps", "the head tap list");
    for (const char* attr : {"modes", "reference", "status"}) {
      if (!root.attr_string(attr)) missing("/", fmt::format("string attribute '{}'", attr));
    }
    const std::set<std::string> modes = split(*root.attr_string("modes"));
    const H5Node* paths = root.group("paths");
    if (!paths || paths->groups.empty()) missing("/paths", "every path's metrics (no path group)");
    for (const auto& [label, group] : paths->groups) check_path(label, group, modes);
    // Paths named elsewhere in the file must have their metrics: a deleted path group
    // would otherwise compare as "nothing to compare".
    const std::string reference = *root.attr_string("reference");
    if (const H5Node* e2e = root.group("end_to_end")) {
      for (const auto& [label, g] : e2e->groups) require_path(label, "/end_to_end/" + label);
    }
    if (const H5Node* timing = root.group("timing")) {
      for (const auto& [label, g] : timing->groups) {
        if (label != reference) require_path(label, "/timing/" + label);
        check_timing("/timing/" + label, g);
      }
    }
    const H5Node* statics = root.group("static");
    if (!statics || statics->groups.empty()) missing("/static", "the static scorers' verdicts");
    for (const auto& [scorer, g] : statics->groups) {
      if (!g.attr_string("status")) missing("/static/" + scorer, "string attribute 'status'");
    }
    if (const H5Node* cross = root.group("crosscheck")) {
      for (const auto& [scorer, g] : cross->groups) {
        const std::string where = "/crosscheck/" + scorer;
        if (!g.attr_string("verdict")) missing(where, "string attribute 'verdict'");
        if (auto path = g.attr_string("path"); path && !path->empty()) require_path(*path, where + "@path");
      }
    }
    if (root.attr_number("ref64").value_or(0) == 1) {
      for (const char* mode : kModes) {
        if (!modes.count(mode)) continue;
        const std::string where = fmt::format("/reference/noise_floor/{}", mode);
        const H5Node* g = root.group(where);
        if (!g) missing(where, "the reference's noise floor (ref64 is 1)");
        check_metrics(where, *g);
      }
    }
    validate_invariance(run_, modes.count("invariance") > 0);
    if (modes.count("perturb")) {
      const H5Node* perturb = root.group("perturb");
      if (!perturb || !run_.layer_table(*perturb, "sensitivity")) {
        missing("/perturb/sensitivity", "the perturbation's sensitivities (modes include perturb)");
      }
    }
  }

 private:
  [[noreturn]] void missing(const std::string& object, const std::string& what) const {
    run_.fail(object, fmt::format("incomparable: missing {}", what));
  }

  static std::set<std::string> split(const std::string& list) {
    std::set<std::string> out;
    std::stringstream ss(list);
    for (std::string item; std::getline(ss, item, ',');) out.insert(item);
    return out;
  }

  void require_path(const std::string& label, const std::string& named_by) const {
    const H5Node* paths = run_.root().group("paths");
    if (!paths || !paths->groups.count(label)) {
      missing("/paths/" + label, fmt::format("the metrics of path '{}' (named by {})", label, named_by));
    }
  }

  void check_path(const std::string& label, const H5Node& group, const std::set<std::string>& modes) const {
    bool any_mode = false;
    for (const char* mode : kModes) {
      const std::string where = fmt::format("/paths/{}/{}", label, mode);
      auto it = group.groups.find(mode);
      if (it == group.groups.end()) {
        if (modes.count(mode)) missing(where, fmt::format("the {} metrics (modes include {})", mode, mode));
        continue;
      }
      any_mode = true;
      check_metrics(where, it->second);
    }
    if (!any_mode) missing("/paths/" + label, "an isolated or propagated metrics group");
  }

  // Every required table, of the run's shape; flags hold only the values they may.
  void check_metrics(const std::string& where, const H5Node& group) const {
    auto head = group.groups.find("head");
    if (head == group.groups.end()) missing(where + "/head", "the head metrics");
    for (const auto& metric : metrics_) {
      if (!run_.layer_table(group, metric)) missing(where + "/" + metric, "a layer-tap table");
      if (!run_.head_table(group, metric)) missing(where + "/head/" + metric, "a head table");
    }
    check_flags(where + "/present", *run_.layer_table(group, "present"), {0, 1});
    check_flags(where + "/head/present", *run_.head_table(group, "present"), {0, 1});
    check_flags(where + "/gate", *run_.layer_table(group, "gate"), {-1, 0, 1});
    check_flags(where + "/head/gate", *run_.head_table(group, "gate"), {-1, 0, 1});
  }

  void check_flags(const std::string& where, const Table& t, std::set<double> allowed) const {
    for (double v : t.values) {
      if (!allowed.count(v)) run_.fail(where, fmt::format("incomparable: flag value {} out of range", v));
    }
  }

  void check_timing(const std::string& where, const H5Node& group) const {
    const auto layers = static_cast<std::size_t>(run_.n_layers());
    run_.vector(group, "layer_ms", layers);  // shape checked when present
    auto names = run_.strings(group, "op_names");
    for (const char* name : {"op_median_ms", "op_p10_ms", "op_p90_ms"}) {
      auto t = run_.table(group, name, layers);
      if (!names.empty() && !t) missing(where + "/" + name, "an op timing table (op_names is present)");
      if (t && t->cols != names.size()) {
        run_.fail(where + "/" + name, fmt::format("incomparable: {} columns for {} op names", t->cols, names.size()));
      }
    }
  }

  const Run& run_;
  std::set<std::string> metrics_;
};

}  // namespace

const std::set<std::string>& required_metrics() {
  static const std::set<std::string> m = {"present", "gate", "rel_l2", "nan_count", "inf_count"};
  return m;
}

void validate_run(const Run& run, const std::set<std::string>& extra_metrics) {
  Validator(run, extra_metrics).check();
}

void validate_file(const ResultsFile& file, const std::set<std::string>& extra_metrics) {
  for (const Run& run : file.runs()) validate_run(run, extra_metrics);
}

}  // namespace fusecheck::results
