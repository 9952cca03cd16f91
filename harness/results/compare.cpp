// The comparison of two runs and its text / markdown renderings (see compare.h).
#include "harness/results/compare.h"
#include "harness/results/invariance_results.h"
#include "harness/results/fp8_compare.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <fmt/core.h>

#include "harness/core/error.h"
#include "harness/results/printable.h"
#include "harness/results/validate.h"

namespace fusecheck::results {

std::string_view severity_name(Severity s) {
  switch (s) {
    case Severity::regression: return "REGRESSION";
    case Severity::improvement: return "improvement";
    case Severity::note: return "note";
  }
  return "?";
}

std::size_t RunComparison::count(Severity s) const {
  return static_cast<std::size_t>(
      std::count_if(findings.begin(), findings.end(), [&](const Finding& f) { return f.severity == s; }));
}

std::size_t RunComparison::count(TimingVerdict v) const {
  return static_cast<std::size_t>(
      std::count_if(timings.begin(), timings.end(), [&](const TimingRow& t) { return t.result.verdict == v; }));
}

bool CompareReport::has_regression() const {
  for (const auto& f : unpaired) {
    if (f.severity == Severity::regression) return true;
  }
  for (const auto& r : runs) {
    if (r.count(Severity::regression) > 0) return true;
  }
  return false;
}

namespace {

constexpr const char* kModes[] = {"isolated", "propagated"};

std::string num(double v) {
  if (std::isnan(v)) return "NaN";
  return fmt::format("{:.3g}", v);
}

bool positive(double v) { return std::isfinite(v) ? v > 0 : !std::isnan(v); }

// Compares the cells of one metrics group (a path's mode group, its head, or the
// reference's noise floor) against the baseline's.
class CellComparer {
 public:
  CellComparer(const Run& fresh, const Run& base, const CompareRules& rules, RunComparison& out)
      : fresh_(fresh), base_(base), rules_(rules), out_(out) {}

  // `names[c]` is the tap of column c; `row_name(r)` names row r ("L3" or "head").
  template <typename RowName>
  void compare(const std::string& where, const std::vector<std::string>& names,
               const std::function<std::optional<Table>(const Run&, const std::string&)>& get,
               RowName row_name) {
    auto fresh_present = get(fresh_, "present");
    auto base_present = get(base_, "present");
    auto base_any = get(base_, "rel_l2");
    if (!base_any) return;  // the baseline measured nothing here
    auto fresh_any = get(fresh_, "rel_l2");
    if (!fresh_any) {
      add(Severity::regression, "coverage", where, "metrics missing from the new run", rules_.lost_tap_is_regression);
      return;
    }
    std::map<std::string, std::pair<std::optional<Table>, std::optional<Table>>> tables;
    std::set<std::string> wanted = {"nan_count", "inf_count", "overflow_count", "gate"};
    for (const auto& [metric, rule] : rules_.metrics) wanted.insert(metric);
    for (const auto& [tap, overrides] : rules_.tap_overrides) {
      for (const auto& [metric, rule] : overrides) wanted.insert(metric);
    }
    for (const auto& m : wanted) tables[m] = {get(fresh_, m), get(base_, m)};

    const std::size_t rows = base_any->rows, cols = base_any->cols;
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t c = 0; c < cols; ++c) {
        const std::string& tap = names[c];
        std::string cell = fmt::format("{} {} {}", where, row_name(r), tap);
        bool was_present = base_present ? base_present->at(r, c) == 1 : !std::isnan(base_any->at(r, c));
        bool is_present = fresh_present ? fresh_present->at(r, c) == 1 : !std::isnan(fresh_any->at(r, c));
        if (!was_present) continue;
        if (!is_present) {
          add(Severity::regression, "coverage", cell, "tap present in the baseline, absent now",
              rules_.lost_tap_is_regression);
          continue;
        }
        ++out_.cells_compared;
        bool nonfinite = compare_nonfinite(cell, tables, r, c);
        for (const auto& [metric, pair] : tables) {
          const GrowthRule* rule = rules_.rule_for(tap, metric);
          if (!rule || !pair.first || !pair.second) continue;
          compare_growth(cell, metric, *rule, pair.second->at(r, c), pair.first->at(r, c), nonfinite);
        }
        compare_gate(cell, tables.at("gate"), r, c);
      }
    }
  }

 private:
  void add(Severity s, std::string kind, std::string where, std::string detail, bool counts = true) {
    if (s == Severity::regression && !counts) s = Severity::note;
    out_.findings.push_back({s, std::move(kind), std::move(where), std::move(detail)});
  }

  using TablePair = std::pair<std::optional<Table>, std::optional<Table>>;

  bool compare_nonfinite(const std::string& cell, const std::map<std::string, TablePair>& tables,
                         std::size_t r, std::size_t c) {
    std::string detail;
    for (const char* metric : {"nan_count", "inf_count", "overflow_count"}) {
      const auto& [fresh, base] = tables.at(metric);
      if (!fresh) continue;
      double now = fresh->at(r, c);
      double before = base ? base->at(r, c) : 0.0;
      if (positive(now) && !positive(before)) {
        detail += fmt::format("{}{} {} -> {}", detail.empty() ? "" : ", ", metric, num(before), num(now));
      }
    }
    if (detail.empty()) return false;
    add(Severity::regression, "nonfinite", cell, detail, rules_.new_nonfinite_is_regression);
    return true;
  }

  void compare_growth(const std::string& cell, const std::string& metric, const GrowthRule& rule,
                      double before, double now, bool nonfinite_reported) {
    if (std::isnan(before)) return;  // undefined in the baseline: nothing to hold it to
    if (!std::isfinite(now) || (std::isinf(before) && !std::isinf(now))) {
      if (std::isinf(before) && !std::isinf(now) && std::isfinite(now)) {
        add(Severity::improvement, "divergence", cell, fmt::format("{} {} -> {}", metric, num(before), num(now)));
      } else if (!nonfinite_reported && std::isfinite(before)) {
        add(Severity::regression, "divergence", cell, fmt::format("{} {} -> {}", metric, num(before), num(now)));
      }
      return;
    }
    if (now > before * rule.factor && now > rule.floor) {
      add(Severity::regression, "divergence", cell,
          fmt::format("{} {} -> {} (x{:.2f}, limit x{:.2f})", metric, num(before), num(now),
                      before > 0 ? now / before : INFINITY, rule.factor));
    } else if (now * rule.factor < before && before > rule.floor) {
      add(Severity::improvement, "divergence", cell,
          fmt::format("{} {} -> {} (x{:.2f})", metric, num(before), num(now), now / before));
    }
  }

  void compare_gate(const std::string& cell, const TablePair& gate, std::size_t r, std::size_t c) {
    if (!gate.first || !gate.second) return;
    double now = gate.first->at(r, c), before = gate.second->at(r, c);
    if (before == 1 && now == 0) {
      add(Severity::regression, "gate", cell, "gate passed in the baseline, fails now",
          rules_.gate_newly_failing_is_regression);
    } else if (before == 0 && now == 1) {
      add(Severity::improvement, "gate", cell, "gate failed in the baseline, passes now");
    }
  }

  const Run& fresh_;
  const Run& base_;
  const CompareRules& rules_;
  RunComparison& out_;
};

void add_finding(RunComparison& out, Severity s, std::string kind, std::string where, std::string detail,
                 bool counts = true) {
  if (s == Severity::regression && !counts) s = Severity::note;
  out.findings.push_back({s, std::move(kind), std::move(where), std::move(detail)});
}

const H5Node* child(const H5Node* node, const std::string& name) {
  if (!node) return nullptr;
  auto it = node->groups.find(name);
  return it == node->groups.end() ? nullptr : &it->second;
}

void compare_metric_groups(const Run& fresh, const Run& base, const CompareRules& rules,
                           RunComparison& out) {
  CellComparer cells(fresh, base, rules, out);
  auto layer_name = [](std::size_t r) { return fmt::format("L{}", r); };
  auto head_name = [](std::size_t) { return std::string("head"); };
  auto compare_mode_group = [&](const std::string& where, const H5Node* fresh_group, const H5Node* base_group) {
    if (!base_group) return;
    if (!fresh_group) {
      add_finding(out, Severity::regression, "coverage", where, "ran in the baseline, missing now",
                  rules.lost_tap_is_regression);
      return;
    }
    auto layer_get = [&](const Run& run, const std::string& metric) {
      return run.layer_table(&run == &fresh ? *fresh_group : *base_group, metric);
    };
    auto head_get = [&](const Run& run, const std::string& metric) {
      return run.head_table(&run == &fresh ? *fresh_group : *base_group, metric);
    };
    cells.compare(where, base.taps(), layer_get, layer_name);
    cells.compare(where, base.head_taps(), head_get, head_name);

    auto fl = fresh_group->attr_number("first_divergent_layer");
    auto bl = base_group->attr_number("first_divergent_layer");
    if (fl && bl && *fl != *bl) {
      add_finding(out, Severity::note, "divergence", where,
                  fmt::format("first divergent layer {} -> {} (tap {} -> {})", *bl, *fl,
                              base_group->attr_string("first_divergent_tap").value_or(""),
                              fresh_group->attr_string("first_divergent_tap").value_or("")));
    }
  };

  for (const auto& label : base.path_labels()) {
    bool in_fresh = false;
    for (const auto& l : fresh.path_labels()) in_fresh |= l == label;
    if (!in_fresh) {
      add_finding(out, Severity::regression, "coverage", label, "path ran in the baseline, missing now",
                  rules.lost_tap_is_regression);
      continue;
    }
    for (const char* mode : kModes) {
      compare_mode_group(fmt::format("{} {}", label, mode), fresh.mode_group(label, mode),
                         base.mode_group(label, mode));
    }
    const H5Node* fa = child(child(fresh.root().group("paths"), label), "amplification");
    const H5Node* ba = child(child(base.root().group("paths"), label), "amplification");
    if (fa && ba) {
      auto f = fa->attr_number("end_to_end"), b = ba->attr_number("end_to_end");
      // Amplification is a ratio of errors already judged cell by cell; a change is
      // worth reading, not a regression of its own.
      if (f && b && std::isfinite(*f) && std::isfinite(*b) && *b > 0 && std::abs(*f / *b - 1) > 0.25) {
        add_finding(out, Severity::note, "divergence", label,
                    fmt::format("end-to-end amplification {} -> {}", num(*b), num(*f)));
      }
    }
  }
  const H5Node* fresh_floor = fresh.root().group("reference/noise_floor");
  const H5Node* base_floor = base.root().group("reference/noise_floor");
  for (const char* mode : kModes) {
    compare_mode_group(fmt::format("reference-vs-ref64 {}", mode), child(fresh_floor, mode),
                       child(base_floor, mode));
  }
}

void compare_end_to_end(const Run& fresh, const Run& base, const CompareRules& rules, RunComparison& out) {
  const H5Node* be = base.root().group("end_to_end");
  const H5Node* fe = fresh.root().group("end_to_end");
  if (!be) return;
  for (const auto& entry : be->groups) {
    // Named references, not structured bindings: lambdas below capture them (clang 14).
    const auto& label = entry.first;
    const auto& bg = entry.second;
    const H5Node* fg = child(fe, label);
    std::string where = label + " end-to-end";
    if (!fg) {
      add_finding(out, Severity::regression, "coverage", where, "measured in the baseline, missing now",
                  rules.lost_tap_is_regression);
      continue;
    }
    auto growth = [&](const char* name, const GrowthRule& rule) {
      auto b = bg.attr_number(name), f = fg->attr_number(name);
      if (!b || !f || std::isnan(*b)) return;
      if (!std::isfinite(*f) || (*f > *b * rule.factor && *f > rule.floor)) {
        add_finding(out, Severity::regression, "end_to_end", where,
                    fmt::format("{} {} -> {} (limit x{:.2f})", name, num(*b), num(*f), rule.factor));
      } else if (*f * rule.factor < *b && *b > rule.floor) {
        add_finding(out, Severity::improvement, "end_to_end", where, fmt::format("{} {} -> {}", name, num(*b), num(*f)));
      }
    };
    growth("kl_mean", rules.kl_mean);
    growth("kl_p99", rules.kl_p99);
    auto bt = bg.attr_number("top1_agreement"), ft = fg->attr_number("top1_agreement");
    if (bt && ft && std::isfinite(*bt)) {
      if (!std::isfinite(*ft) || *ft < *bt - rules.top1_drop) {
        add_finding(out, Severity::regression, "end_to_end", where,
                    fmt::format("top-1 agreement {} -> {} (allowed drop {})", num(*bt), num(*ft), num(rules.top1_drop)));
      } else if (*ft > *bt + rules.top1_drop) {
        add_finding(out, Severity::improvement, "end_to_end", where,
                    fmt::format("top-1 agreement {} -> {}", num(*bt), num(*ft)));
      }
    }
    auto bm = bg.attr_number("greedy_first_mismatch"), fm = fg->attr_number("greedy_first_mismatch");
    if (bm && fm && *bm != *fm) {
      // -1 means "never mismatched", which is later than any step.
      auto later = [](double a, double b) { return (a < 0 ? INFINITY : a) > (b < 0 ? INFINITY : b); };
      auto show = [](double s) { return s < 0 ? std::string("none") : fmt::format("step {}", s); };
      if (later(*bm, *fm)) {
        add_finding(out, Severity::regression, "end_to_end", where,
                    fmt::format("first greedy mismatch {} -> {}", show(*bm), show(*fm)),
                    rules.greedy_earlier_is_regression);
      } else {
        add_finding(out, Severity::improvement, "end_to_end", where,
                    fmt::format("first greedy mismatch {} -> {}", show(*bm), show(*fm)));
      }
    }
  }
}

void compare_verdicts(const Run& fresh, const Run& base, const CompareRules& rules, RunComparison& out) {
  auto verdict = [&](const std::string& where, const std::optional<std::string>& b,
                     const std::optional<std::string>& f) {
    if (b && f && *b != *f) {
      add_finding(out, Severity::regression, "verdict", where, fmt::format("'{}' -> '{}'", *b, *f),
                  rules.verdict_change_is_regression);
    }
  };
  for (const char* group : {"static", "crosscheck"}) {
    const H5Node* bg = base.root().group(group);
    if (!bg) continue;
    for (const auto& [scorer, node] : bg->groups) {
      const H5Node* fg = child(fresh.root().group(group), scorer);
      std::string attr = std::string(group) == "static" ? "status" : "verdict";
      std::string where = fmt::format("{} {} {}", group, scorer, attr);
      if (!fg) {
        add_finding(out, Severity::regression, "coverage", where, "in the baseline, missing now",
                    rules.lost_tap_is_regression);
        continue;
      }
      verdict(where, node.attr_string(attr), fg->attr_string(attr));
    }
  }
  auto fb = base.number_attr("fallback_applied"), ff = fresh.number_attr("fallback_applied");
  if (fb && ff && *fb != *ff) {
    verdict("fallback_applied", fmt::format("{}", *fb), fmt::format("{}", *ff));
  }
  auto sb = base.attr("status"), sf = fresh.attr("status");
  if (sb && sf && *sb != *sf) {
    // Each newly failing cell is already a finding of its own; this line says it at a glance.
    add_finding(out, *sf == "pass" ? Severity::improvement : Severity::note, "verdict", "run status",
                fmt::format("'{}' -> '{}'", *sb, *sf));
  }
}

// Timed items are judged aggregated, where run-to-run noise averages out and a real
// change still shows: each op summed over all layers (a kernel regression hits every
// layer, since the layers share shapes), and each layer as a whole (its `layer` op when
// the path times one, else the sum of its ops). Intervals of a sum are the sums of the
// p10s and p90s: wider than the sum's own spread, so a change they call clear is clear.
void compare_timings(const Run& fresh, const Run& base, const CompareRules& rules, RunComparison& out) {
  const H5Node* bt = base.root().group("timing");
  const H5Node* ft = fresh.root().group("timing");
  if (!bt || !ft) return;
  const std::size_t layers = static_cast<std::size_t>(base.n_layers());
  for (const auto& entry : bt->groups) {
    const auto& label = entry.first;
    const auto& bg = entry.second;
    const H5Node* fg = child(ft, label);
    if (!fg) continue;  // a path that stopped being timed is a coverage question for the cells
    auto reps = [](const H5Node& g) {
      return static_cast<int>(g.attr_number("repetitions").value_or(0));
    };
    auto add_row = [&](std::string item, TimingStats b, TimingStats f, std::size_t launches) {
      TimingThresholds t = rules.timing;
      t.min_gap_absolute *= static_cast<double>(launches);
      TimingRow row{label, std::move(item), b, f, compare_timing(b, f, t)};
      Severity s = Severity::note;
      bool counts = false;
      switch (row.result.verdict) {
        case TimingVerdict::same: break;
        case TimingVerdict::faster: s = Severity::improvement; break;
        case TimingVerdict::slower: s = Severity::regression; counts = rules.slower_is_regression; break;
        case TimingVerdict::ambiguous: s = Severity::regression; counts = rules.ambiguous_is_regression; break;
      }
      if (row.result.verdict != TimingVerdict::same && (counts || s == Severity::improvement)) {
        add_finding(out, s, "timing", fmt::format("{} {}", label, row.item),
                    fmt::format("{} {:.4g} ms -> {:.4g} ms ({})", timing_verdict_name(row.result.verdict),
                                b.median, f.median, row.result.reason));
      }
      out.timings.push_back(std::move(row));
    };
    auto b_names = base.strings(bg, "op_names");
    auto f_names = fresh.strings(*fg, "op_names");
    auto b_med = base.table(bg, "op_median_ms", layers), f_med = fresh.table(*fg, "op_median_ms", layers);
    auto b_p10 = base.table(bg, "op_p10_ms", layers), f_p10 = fresh.table(*fg, "op_p10_ms", layers);
    auto b_p90 = base.table(bg, "op_p90_ms", layers), f_p90 = fresh.table(*fg, "op_p90_ms", layers);
    if (!b_names.empty() && b_med && b_p10 && b_p90 && f_med && f_p10 && f_p90) {
      for (const auto* t : {&*b_med, &*b_p10, &*b_p90}) {
        if (t->cols != b_names.size()) base.fail("timing/" + label, "op tables disagree with op_names");
      }
      for (const auto* t : {&*f_med, &*f_p10, &*f_p90}) {
        if (t->cols != f_names.size()) fresh.fail("timing/" + label, "op tables disagree with op_names");
      }
      // (base column, fresh column) of every op both sides timed.
      std::vector<std::pair<std::size_t, std::size_t>> shared;
      for (std::size_t bc = 0; bc < b_names.size(); ++bc) {
        auto it = std::find(f_names.begin(), f_names.end(), b_names[bc]);
        if (it != f_names.end()) shared.emplace_back(bc, static_cast<std::size_t>(it - f_names.begin()));
      }
      // Sums over a set of (layer, shared op) cells; cells NaN on either side are left out
      // of both, so the two sums cover the same launches.
      auto sum_cells = [&](const std::vector<std::pair<std::size_t, std::size_t>>& cells, TimingStats& b,
                           TimingStats& f) {
        std::size_t n = 0;
        b = {0, 0, 0, reps(bg)};
        f = {0, 0, 0, reps(*fg)};
        for (auto [l, k] : cells) {
          auto [bc, fc] = shared[k];
          double vals[6] = {b_med->at(l, bc), b_p10->at(l, bc), b_p90->at(l, bc),
                            f_med->at(l, fc), f_p10->at(l, fc), f_p90->at(l, fc)};
          if (std::any_of(std::begin(vals), std::end(vals), [](double v) { return std::isnan(v); })) continue;
          b.median += vals[0], b.lo += vals[1], b.hi += vals[2];
          f.median += vals[3], f.lo += vals[4], f.hi += vals[5];
          ++n;
        }
        return n;
      };
      std::optional<std::size_t> whole_layer_op;
      for (std::size_t k = 0; k < shared.size(); ++k) {
        if (b_names[shared[k].first] == "layer") whole_layer_op = k;
      }
      for (std::size_t k = 0; k < shared.size(); ++k) {
        std::vector<std::pair<std::size_t, std::size_t>> cells;
        for (std::size_t l = 0; l < layers; ++l) cells.emplace_back(l, k);
        TimingStats b, f;
        if (std::size_t n = sum_cells(cells, b, f)) {
          add_row(fmt::format("{} (all layers)", b_names[shared[k].first]), b, f, n);
        }
      }
      for (std::size_t l = 0; l < layers; ++l) {
        std::vector<std::pair<std::size_t, std::size_t>> cells;
        for (std::size_t k = 0; k < shared.size(); ++k) {
          if (whole_layer_op ? k == *whole_layer_op : true) cells.emplace_back(l, k);
        }
        TimingStats b, f;
        if (std::size_t n = sum_cells(cells, b, f)) add_row(fmt::format("L{}", l), b, f, n);
      }
      continue;
    }
    // CPU paths: layer_ms is one steady-clock run, so it carries no spread; with one
    // repetition compare_timing can only call it the same or ambiguous.
    auto b_layer = base.vector(bg, "layer_ms", layers), f_layer = fresh.vector(*fg, "layer_ms", layers);
    if (!b_layer || !f_layer) continue;
    for (std::size_t l = 0; l < layers; ++l) {
      double b = (*b_layer)[l], f = (*f_layer)[l];
      if (std::isnan(b) || std::isnan(f)) continue;
      add_row(fmt::format("L{}", l), TimingStats{b, b, b, 1}, TimingStats{f, f, f, 1}, 1);
    }
  }
}

// The builds in a results file's `plugins` attribute ("name version sha256:HEX FILE; env
// A=1, ..." per line) without the file's location, which differs between machines.
std::vector<std::string> plugin_builds(const std::string& attr) {
  std::vector<std::string> builds;
  std::istringstream lines(attr);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string name, version, sha;
    words >> name >> version >> sha;
    const auto env = line.find("; env ");
    builds.push_back(name + " " + version + " " + sha + (env == std::string::npos ? "" : line.substr(env)));
  }
  return builds;
}

std::string plugin_builds_text(const std::string& attr) {
  std::string text;
  for (const auto& b : plugin_builds(attr)) text += (text.empty() ? "" : " | ") + b;
  return text.empty() ? "none recorded" : text;
}

}  // namespace

RunComparison compare_runs(const Run& fresh, const Run& base, const CompareRules& rules) {
  RunComparison out;
  out.scenario = fresh.identity().scenario_name;
  out.device = fresh.identity().device_name.empty() ? fresh.identity().device
                                                    : fresh.identity().device + ", " + fresh.identity().device_name;
  out.fresh_label = fresh.label();
  out.base_label = base.label();
  if (fresh.identity().scenario_text != base.identity().scenario_text) {
    add_finding(out, Severity::note, "scenario", "scenario text",
                "the scenario file changed since the baseline was recorded");
  }
  if (plugin_builds(fresh.identity().plugins) != plugin_builds(base.identity().plugins)) {
    add_finding(out, Severity::note, "plugins", "plug-in builds",
                fmt::format("new and baseline came from different plug-in builds (new: {}; baseline: {})",
                            plugin_builds_text(fresh.identity().plugins), plugin_builds_text(base.identity().plugins)));
  }
  if (fresh.taps() != base.taps() || fresh.head_taps() != base.head_taps()) {
    throw InputError(fresh.label(), "tap order differs from the baseline's; cannot compare cell by cell");
  }
  compare_metric_groups(fresh, base, rules, out);
  compare_end_to_end(fresh, base, rules, out);
  compare_verdicts(fresh, base, rules, out);
  compare_timings(fresh, base, rules, out);
  compare_invariance(fresh, base, out);
  compare_fp8_clipping(fresh.root(), base.root(), out.findings);
  compare_kv_age(fresh.root(), base.root(), out.findings);
  compare_scale_delivery(fresh.root(), base.root(), out.findings);
  std::stable_sort(out.findings.begin(), out.findings.end(),
                   [](const Finding& a, const Finding& b) { return a.severity < b.severity; });
  return out;
}

CompareReport compare_files(const ResultsFile& fresh, const ResultsFile& base, const CompareRules& rules,
                            bool allow_mismatch) {
  // Both sides must hold everything compared, the tables the rules judge included:
  // comparing what is left of a damaged file would call it clean.
  std::set<std::string> judged;
  for (const auto& [metric, rule] : rules.metrics) judged.insert(metric);
  for (const auto& [tap, overrides] : rules.tap_overrides) {
    for (const auto& [metric, rule] : overrides) judged.insert(metric);
  }
  validate_file(base, judged);
  validate_file(fresh, judged);
  CompareReport report;
  report.fresh_file = fresh.file();
  report.base_file = base.file();
  auto refuse = [&](const std::vector<std::string>& diffs) {
    std::string list;
    for (const auto& d : diffs) list += (list.empty() ? "" : "; ") + d;
    throw InputError(fresh.file(), fmt::format("refusing to compare with {}: runs differ ({}); pass "
                                               "--allow-mismatch to compare anyway",
                                               base.file(), list));
  };
  // Two single runs are a pair whatever their names: a rename is a mismatch to refuse,
  // not two unrelated scenarios.
  if (fresh.runs().size() == 1 && base.runs().size() == 1) {
    const Run& f = fresh.runs()[0];
    const Run& b = base.runs()[0];
    auto diffs = identity_differences(f.identity(), b.identity());
    if (!diffs.empty() && !allow_mismatch) refuse(diffs);
    report.runs.push_back(compare_runs(f, b, rules));
    report.runs.back().identity_differences = diffs;
    return report;
  }
  for (const Run& b : base.runs()) {
    const Run* match = nullptr;
    for (const Run& f : fresh.runs()) {
      if (f.identity().scenario_name == b.identity().scenario_name) match = &f;
    }
    if (!match) {
      report.unpaired.push_back({Severity::regression, "coverage", b.identity().scenario_name,
                                 "scenario in the baseline, missing from the new results"});
      continue;
    }
    auto diffs = identity_differences(match->identity(), b.identity());
    if (!diffs.empty() && !allow_mismatch) refuse(diffs);
    report.runs.push_back(compare_runs(*match, b, rules));
    report.runs.back().identity_differences = diffs;
  }
  for (const Run& f : fresh.runs()) {
    bool known = std::any_of(base.runs().begin(), base.runs().end(), [&](const Run& b) {
      return b.identity().scenario_name == f.identity().scenario_name;
    });
    if (!known) {
      report.unpaired.push_back({Severity::note, "coverage", f.identity().scenario_name,
                                 "new scenario with no baseline yet"});
    }
  }
  return report;
}

namespace {

std::size_t count_too_few(const RunComparison& r) {
  return static_cast<std::size_t>(std::count_if(r.timings.begin(), r.timings.end(), [](const TimingRow& t) {
    return t.result.too_few && t.result.verdict != TimingVerdict::same;
  }));
}

std::string summary_line(const RunComparison& r) {
  std::size_t few = count_too_few(r);
  return fmt::format("{} regression(s), {} improvement(s), {} note(s); {} cells compared; timing: {} same, "
                     "{} slower, {} faster, {} ambiguous{}",
                     r.count(Severity::regression), r.count(Severity::improvement), r.count(Severity::note),
                     r.cells_compared, r.count(TimingVerdict::same), r.count(TimingVerdict::slower),
                     r.count(TimingVerdict::faster), r.count(TimingVerdict::ambiguous),
                     few ? fmt::format(" ({} of them single measurements, not listed)", few) : "");
}

// Timing rows worth listing: every change that the measurements can speak to (a side
// timed once has no spread, so its differences are noise of unknown size), biggest first.
std::vector<const TimingRow*> changed_timings(const RunComparison& r) {
  std::vector<const TimingRow*> rows;
  for (const auto& t : r.timings) {
    if (t.result.verdict != TimingVerdict::same && !t.result.too_few) rows.push_back(&t);
  }
  std::stable_sort(rows.begin(), rows.end(), [](const TimingRow* a, const TimingRow* b) {
    auto rank = [](TimingVerdict v) { return v == TimingVerdict::slower ? 0 : v == TimingVerdict::ambiguous ? 1 : 2; };
    if (rank(a->result.verdict) != rank(b->result.verdict)) return rank(a->result.verdict) < rank(b->result.verdict);
    return std::abs(a->result.change) > std::abs(b->result.change);
  });
  return rows;
}

std::string verdict_word(bool regression) { return regression ? "REGRESSION" : "clean"; }

// Table cells: '|' would end the cell, control characters (a newline) the row.
std::string md_escape(const std::string& s) {
  std::string out;
  for (char c : printable(s)) {
    if (c == '|') out += "\\|";
    else out += c;
  }
  return out;
}

}  // namespace

std::string format_text(const CompareReport& report, std::size_t max_rows) {
  std::string out = fmt::format("fusecheck compare: {} against baseline {}\n", printable(report.fresh_file),
                                printable(report.base_file));
  for (const auto& f : report.unpaired) {
    out += fmt::format("  {:<11} {:<10} {}: {}\n", severity_name(f.severity), f.kind, printable(f.where),
                       printable(f.detail));
  }
  for (const auto& r : report.runs) {
    out += fmt::format("\nscenario {} ({}): {}\n  {}\n", printable(r.scenario), printable(r.device),
                       verdict_word(r.count(Severity::regression) > 0), summary_line(r));
    for (const auto& d : r.identity_differences) out += fmt::format("  mismatch allowed: {}\n", printable(d));
    std::size_t shown = 0;
    for (const auto& f : r.findings) {
      if (shown++ == max_rows) {
        out += fmt::format("  ... and {} more finding(s)\n", r.findings.size() - max_rows);
        break;
      }
      out += fmt::format("  {:<11} {:<10} {}: {}\n", severity_name(f.severity), f.kind, printable(f.where),
                       printable(f.detail));
    }
    auto rows = changed_timings(r);
    if (!rows.empty()) {
      out += "  timing changes (median, new vs baseline):\n";
      shown = 0;
      for (const auto* t : rows) {
        if (shown++ == max_rows) {
          out += fmt::format("    ... and {} more\n", rows.size() - max_rows);
          break;
        }
        out += fmt::format("    {:<9} {} {}: {:.4g} -> {:.4g} ms ({})\n", timing_verdict_name(t->result.verdict),
                           printable(t->path), printable(t->item), t->base.median, t->fresh.median, t->result.reason);
      }
    }
  }
  out += fmt::format("\nverdict: {} (exit {})\n", verdict_word(report.has_regression()), report.exit_code());
  return out;
}

std::string format_markdown(const CompareReport& report, std::size_t max_rows) {
  std::string out;
  for (const auto& f : report.unpaired) {
    out += fmt::format("- **{}** {}: {}\n", severity_name(f.severity), md_escape(f.where), md_escape(f.detail));
  }
  for (const auto& r : report.runs) {
    bool bad = r.count(Severity::regression) > 0;
    out += fmt::format("### {} `{}` ({})\n\n{}\n\n", bad ? "❌" : "✅", md_escape(r.scenario), md_escape(r.device),
                       summary_line(r));
    for (const auto& d : r.identity_differences) out += fmt::format("- mismatch allowed: {}\n", md_escape(d));
    if (!r.findings.empty()) {
      out += "| severity | kind | where | change |\n|---|---|---|---|\n";
      std::size_t shown = 0;
      for (const auto& f : r.findings) {
        if (shown++ == max_rows) {
          out += fmt::format("| | | ... and {} more | |\n", r.findings.size() - max_rows);
          break;
        }
        out += fmt::format("| {} | {} | {} | {} |\n", severity_name(f.severity), md_escape(f.kind), md_escape(f.where),
                           md_escape(f.detail));
      }
      out += "\n";
    }
    auto rows = changed_timings(r);
    if (!rows.empty()) {
      out += "| timing | path | item | baseline ms | new ms | change | noise |\n|---|---|---|---|---|---|---|\n";
      std::size_t shown = 0;
      for (const auto* t : rows) {
        if (shown++ == max_rows) {
          out += fmt::format("| ... and {} more | | | | | | |\n", rows.size() - max_rows);
          break;
        }
        out += fmt::format("| {} | {} | {} | {:.4g} | {:.4g} | {:+.1f}% | {:.1f}% |\n",
                           timing_verdict_name(t->result.verdict), md_escape(t->path), md_escape(t->item), t->base.median,
                           t->fresh.median, 100 * t->result.change, 100 * t->result.noise);
      }
      out += "\n";
    }
  }
  return out;
}

}  // namespace fusecheck::results
