// The calibration analysis and its outputs (calibrate.h).
#include "harness/calibrate/calibrate.h"

#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <cmath>
#include <ctime>
#include <functional>
#include <limits>
#include <set>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "harness/check/check.h"
#include "harness/check/fp8_static.h"
#include "harness/core/error.h"
#include "harness/run/metrics.h"

extern char** environ;

namespace fusecheck::calibrate {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string today() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

// JSON has no NaN / inf: they become null.
nlohmann::json num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

nlohmann::json confusion_json(const Confusion& c) {
  return {{"true_positive", c.true_positive},   {"false_positive", c.false_positive},
          {"true_negative", c.true_negative},   {"false_negative", c.false_negative},
          {"miss_rate", num(c.miss_rate())},    {"false_alarm_rate", num(c.false_alarm_rate())}};
}

nlohmann::json interval_json(const Interval& i) { return nlohmann::json::array({num(i.low), num(i.high)}); }

// Per-run static figures a scorer is judged by.
struct ScorerView {
  std::function<double(const RunRecord&)> score;        // in [0, 1], low = incompatible
  std::function<bool(const RunRecord&)> incompatible;
  std::function<const std::vector<double>&(const RunRecord&)> layer_figure;
  std::function<double(const RunRecord&)> model_figure;
};

ScorerEvaluation evaluate(const std::string& name, const ScorerView& view, const Calibration& c) {
  ScorerEvaluation e;
  e.name = name;
  std::vector<int> labels;
  std::vector<double> pooled_static, pooled_observed, per_run, model_static, model_observed;
  for (std::size_t i : c.used) {
    const RunRecord& r = c.runs[i];
    e.risk.push_back(1.0 - view.score(r));
    e.predicted.push_back(view.incompatible(r) ? 1 : 0);
    labels.push_back(c.labels[i]);
    const PathRecord& p = *r.primary_path();
    const auto& fig = view.layer_figure(r);
    std::vector<double> observed;
    for (double le : p.local_error) observed.push_back(le / p.unit_roundoff);
    if (fig.size() == observed.size()) {
      pooled_static.insert(pooled_static.end(), fig.begin(), fig.end());
      pooled_observed.insert(pooled_observed.end(), observed.begin(), observed.end());
      const double s = spearman(fig, observed);
      if (std::isfinite(s)) per_run.push_back(s);
    }
    model_static.push_back(view.model_figure(r));
    model_observed.push_back(p.logits_propagated_error / p.unit_roundoff);
  }
  e.auc = auc(e.risk, labels);
  e.auc_interval = bootstrap_auc(e.risk, labels, c.options.bootstrap_resamples, c.options.seed);
  e.roc = roc_curve(e.risk, labels);
  e.confusion = confusion(e.predicted, labels);
  e.spearman_layers_pooled = spearman(pooled_static, pooled_observed);
  e.spearman_layers_median = per_run.empty() ? kNaN : run::quantile(per_run, 0.5);
  e.spearman_model = spearman(model_static, model_observed);
  return e;
}

std::vector<FigureMaxima> maxima_of(const Calibration& c, const std::vector<std::size_t>& runs) {
  std::vector<FigureMaxima> m;
  for (std::size_t i : runs) m.push_back(figure_maxima(c.runs[i].components));
  return m;
}

std::vector<int> labels_of(const Calibration& c, const std::vector<std::size_t>& runs) {
  std::vector<int> l;
  for (std::size_t i : runs) l.push_back(c.labels[i]);
  return l;
}

check::Thresholds fit_thresholds(const Calibration& c, const std::vector<std::size_t>& runs) {
  const auto m = maxima_of(c, runs);
  const auto l = labels_of(c, runs);
  return thresholds_from_cuts(fit_cuts(m, l, c.options.max_miss_rate), fit_cuts(m, l, 0.0), m,
                              c.options.baseline_thresholds());
}

SetScore score_set(const std::vector<double>& risk, const std::vector<int>& predicted, const std::vector<int>& labels,
                   const CalibrateOptions& o) {
  SetScore s;
  s.runs = static_cast<int>(labels.size());
  s.positives = static_cast<int>(std::count(labels.begin(), labels.end(), 1));
  s.auc = auc(risk, labels);
  s.auc_interval = bootstrap_auc(risk, labels, o.bootstrap_resamples, o.seed);
  s.confusion = confusion(predicted, labels);
  return s;
}

// Per run of `runs`: risk (1 - the fusecheck score under `t`) and predicted INCOMPATIBLE.
struct Scored {
  std::vector<double> risk;
  std::vector<int> predicted;
};
Scored scored_under(const Calibration& c, const std::vector<std::size_t>& runs, const check::Thresholds& t) {
  Scored out;
  for (std::size_t i : runs) {
    const double s = rescore(c.runs[i].components, t);
    out.risk.push_back(1 - s);
    out.predicted.push_back(s < t.status.incompatible_below ? 1 : 0);
  }
  return out;
}

SetScore score_runs(const Calibration& c, const std::vector<std::size_t>& runs, const check::Thresholds& t) {
  const Scored s = scored_under(c, runs, t);
  return score_set(s.risk, s.predicted, labels_of(c, runs), c.options);
}

// Per run of `runs`: the seed's formula's risk and predicted INCOMPATIBLE (nothing to fit).
Scored braidinfer_scored(const Calibration& c, const std::vector<std::size_t>& runs) {
  Scored out;
  for (std::size_t i : runs) {
    out.risk.push_back(1 - c.runs[i].braidinfer.score);
    out.predicted.push_back(c.runs[i].braidinfer.status == "INCOMPATIBLE" ? 1 : 0);
  }
  return out;
}

SetScore score_runs_braidinfer(const Calibration& c, const std::vector<std::size_t>& runs) {
  const Scored s = braidinfer_scored(c, runs);
  return score_set(s.risk, s.predicted, labels_of(c, runs), c.options);
}

HeldOutFold fold_of(const Calibration& c, std::string key, const std::vector<std::size_t>& runs,
                    check::Thresholds thresholds) {
  HeldOutFold f;
  f.key = std::move(key);
  f.fusecheck = score_runs(c, runs, thresholds);
  f.fusecheck_default = score_runs(c, runs, c.options.baseline_thresholds());
  f.braidinfer = score_runs_braidinfer(c, runs);
  f.thresholds = std::move(thresholds);
  return f;
}

// Leave each group of the design runs out in turn; a group whose complement has no
// divergent run is scored with the defaults (nothing to fit on).
CrossValidation cross_validate(const Calibration& c, std::string by,
                               const std::function<std::string(const RunRecord&)>& group_of) {
  CrossValidation cv;
  cv.by = std::move(by);
  std::set<std::string> groups;
  for (std::size_t i : c.used) groups.insert(group_of(c.runs[i]));
  std::vector<std::size_t> order;
  std::vector<double> risk;
  std::vector<int> predicted;
  for (const auto& g : groups) {
    std::vector<std::size_t> train, test;
    for (std::size_t i : c.used) (group_of(c.runs[i]) == g ? test : train).push_back(i);
    const auto train_labels = labels_of(c, train);
    const bool trainable = std::count(train_labels.begin(), train_labels.end(), 1) > 0;
    check::Thresholds t = trainable ? fit_thresholds(c, train) : c.options.baseline_thresholds();
    const Scored s = scored_under(c, test, t);
    order.insert(order.end(), test.begin(), test.end());
    risk.insert(risk.end(), s.risk.begin(), s.risk.end());
    predicted.insert(predicted.end(), s.predicted.begin(), s.predicted.end());
    cv.folds.push_back(fold_of(c, g, test, std::move(t)));
  }
  cv.pooled = score_set(risk, predicted, labels_of(c, order), c.options);
  return cv;
}

// Per status under `t`, how many labelled runs (design and held out) scored it and diverged.
std::array<check::StatusEvidence, 3> status_evidence(const Calibration& c, const check::Thresholds& t) {
  std::array<check::StatusEvidence, 3> e{};
  for (const auto* set : {&c.used, &c.held_out}) {
    for (std::size_t i : *set) {
      const auto status = check::status_from_score(rescore(c.runs[i].components, t), t.status);
      auto& slot = e[static_cast<std::size_t>(check::status_exit_code(status))];
      ++slot.runs;
      slot.divergent += c.labels[i] == 1 ? 1 : 0;
    }
  }
  return e;
}

std::string rule_text(const OutcomeRule& r) {
  return fmt::format("non-finite logits, KL mean > {:g} nats, or top-1 < {:g} where the reference margin > {:g} nats",
                     r.kl_mean_limit, r.top1_confident_min, r.margin_floor);
}

nlohmann::json set_score_json(const SetScore& s) {
  return {{"runs", s.runs}, {"divergent", s.positives}, {"auc", num(s.auc)},
          {"auc_interval_95", interval_json(s.auc_interval)}, {"confusion", confusion_json(s.confusion)}};
}

nlohmann::json ramps_json(const check::Thresholds& t) {
  nlohmann::json j;
  for (int k = 0; k < kFigures; ++k) {
    const check::Ramp& r = t.*ramp_member(k);
    j[std::string(figure_name(k))] = {{"warn", r.warn}, {"fail", r.fail}};
  }
  return j;
}

nlohmann::json evaluation_json(const ScorerEvaluation& e, bool with_curve) {
  nlohmann::json j = {{"auc", num(e.auc)},
                      {"auc_interval_95", interval_json(e.auc_interval)},
                      {"confusion", confusion_json(e.confusion)},
                      {"spearman_layers_pooled", num(e.spearman_layers_pooled)},
                      {"spearman_layers_median", num(e.spearman_layers_median)},
                      {"spearman_model", num(e.spearman_model)}};
  if (with_curve) {
    nlohmann::json roc = nlohmann::json::array();
    for (const auto& p : e.roc) roc.push_back({num(p.threshold), num(p.false_positive_rate), num(p.true_positive_rate)});
    j["roc"] = roc;
    j["risk"] = e.risk;
  }
  return j;
}

std::string fmt_interval(const Interval& i) { return fmt::format("[{:.3f}, {:.3f}]", i.low, i.high); }

nlohmann::json fold_json(const HeldOutFold& f) {
  return {{"key", f.key}, {"fusecheck", set_score_json(f.fusecheck)},
          {"fusecheck_default", set_score_json(f.fusecheck_default)}, {"braidinfer", set_score_json(f.braidinfer)},
          {"thresholds", ramps_json(f.thresholds)}};
}

nlohmann::json cross_validation_json(const CrossValidation& cv) {
  nlohmann::json folds = nlohmann::json::array();
  for (const auto& f : cv.folds) folds.push_back(fold_json(f));
  return {{"by", cv.by}, {"pooled", set_score_json(cv.pooled)}, {"folds", folds}};
}

std::string fmt_auc(const SetScore& s) {
  if (!std::isfinite(s.auc)) return fmt::format("{:>6} {:>16}", "n/a", "");
  return fmt::format("{:>6.3f} {:>16}", s.auc, fmt_interval(s.auc_interval));
}

std::string fmt_confusion(const Confusion& c) {
  return fmt::format("TP {:3d}  FP {:3d}  TN {:3d}  FN {:3d}  (miss {:.1f}%, false alarm {:.1f}%)", c.true_positive,
                     c.false_positive, c.true_negative, c.false_negative, 100 * c.miss_rate(), 100 * c.false_alarm_rate());
}

// The "per recipe" section of the summary (issue 17).
std::string per_recipe_text(const Calibration& c) {
  std::string s = "\nper recipe (each path's design runs labelled by that path's own outcome, same rule; scorers at "
                  "the default thresholds; the fit above stays on the fused bf16 labels; FP8 key bound: the worst "
                  "layer's |k| bound / 448 at KV scale 1, AUC of the figure alone):\n";
  s += fmt::format("  {:<28} {:>4} {:>4}  {:<23}  {:<23}  {:<23}\n", "path", "runs", "div", "braidinfer AUC [95%]",
                   "fusecheck AUC [95%]", "FP8 key bound AUC [95%]");
  for (const RecipeScore& r : c.per_recipe) {
    s += fmt::format("  {:<28} {:>4d} {:>4d}  {}  {}  {}\n", r.path, r.fusecheck.runs, r.fusecheck.positives,
                     fmt_auc(r.braidinfer), fmt_auc(r.fusecheck),
                     r.fp8 ? fmt::format("{} (runs {})", fmt_auc(r.fp8_key_bound), r.fp8_key_bound.runs) : "-");
  }
  for (const RecipeScore& r : c.per_recipe) {
    s += fmt::format("  {}\n    braidinfer    {}\n    fusecheck     {}\n", r.path,
                     fmt_confusion(r.braidinfer.confusion), fmt_confusion(r.fusecheck.confusion));
    if (r.fp8_fail) {
      s += fmt::format("    FP8 key bound {}  (predicted above {:g} at scale 1)\n",
                       fmt_confusion(r.fp8_key_bound.confusion), *r.fp8_fail);
    }
  }
  return s;
}

}  // namespace

const check::Thresholds& CalibrateOptions::baseline_thresholds() const {
  return baseline ? *baseline : check::default_thresholds();
}

Calibration calibrate(std::vector<RunRecord> runs, const CalibrateOptions& options) {
  Calibration c;
  c.options = options;
  c.identity = results_identity(runs);
  c.created = today();
  c.runs = std::move(runs);
  c.labels.assign(c.runs.size(), -1);
  const auto& held = options.held_out_families;
  for (std::size_t i = 0; i < c.runs.size(); ++i) {
    const RunRecord& r = c.runs[i];
    for (const PathRecord& p : r.paths) {
      LabelledPath lp{i, p.label, p.role, {}, {}};
      lp.e2e = end_to_end_figures(p.kl, p.ref_margin, p.top1_match, options.rule.margin_floor);
      lp.e2e.greedy_first_mismatch = p.greedy_first_mismatch;
      lp.e2e.greedy_steps = p.greedy_steps;
      lp.outcome = judge(lp.e2e, options.rule);
      if (&p == r.primary_path()) {
        c.labels[i] = lp.outcome.divergent ? 1 : 0;
        (std::find(held.begin(), held.end(), r.family) != held.end() ? c.held_out : c.used).push_back(i);
      }
      c.paths.push_back(std::move(lp));
    }
  }
  if (c.used.empty()) throw InputError("calibrate", "no design run (outside the held-out families) has a fused-role "
                                                    "path to label (calibration sweeps list one)");
  const auto positives = std::count_if(c.used.begin(), c.used.end(), [&](std::size_t i) { return c.labels[i] == 1; });
  if (positives == 0 || positives == static_cast<long>(c.used.size())) {
    throw InputError("calibrate", fmt::format("all {} design runs are {} under the outcome rule: a ROC needs both "
                                              "outcomes (widen the sweep)", c.used.size(),
                                              positives ? "divergent" : "non-divergent"));
  }

  const auto maxima = maxima_of(c, c.used);
  const auto labels = labels_of(c, c.used);
  c.fail_fit = fit_cuts(maxima, labels, options.max_miss_rate);
  c.warn_fit = fit_cuts(maxima, labels, 0.0);
  c.thresholds = thresholds_from_cuts(c.fail_fit, c.warn_fit, maxima, options.baseline_thresholds());
  c.thresholds.source = fmt::format("fusecheck calibrate: fail cuts at miss rate <= {:g}, then fewest false alarms; "
                                    "warn cuts at no miss, below fail (docs/calibration.md)",
                                    options.max_miss_rate);
  c.thresholds.created = c.created;
  c.thresholds.sweep = c.identity;

  const check::Thresholds& defaults = c.options.baseline_thresholds();
  c.braidinfer = evaluate("braidinfer",
                          {[](const RunRecord& r) { return r.braidinfer.score; },
                           [](const RunRecord& r) { return r.braidinfer.status == "INCOMPATIBLE"; },
                           [](const RunRecord& r) -> const std::vector<double>& { return r.braidinfer.layer_figure; },
                           [](const RunRecord& r) { return r.braidinfer.estimated_amplification; }},
                          c);
  auto by_thresholds = [](const check::Thresholds& t) {
    return ScorerView{[t](const RunRecord& r) { return rescore(r.components, t); },
                      [t](const RunRecord& r) { return rescore(r.components, t) < t.status.incompatible_below; },
                      [](const RunRecord& r) -> const std::vector<double>& { return r.fusecheck.layer_figure; },
                      [](const RunRecord& r) { return r.fusecheck.estimated_amplification; }};
  };
  c.fusecheck = evaluate("fusecheck (default thresholds)", by_thresholds(defaults), c);
  c.fitted = evaluate("fusecheck (fitted thresholds)", by_thresholds(c.thresholds), c);

  c.by_family = cross_validate(c, "family", [](const RunRecord& r) { return r.family; });
  c.by_seed = cross_validate(c, "seed", [](const RunRecord& r) { return r.seed; });
  if (!c.held_out.empty()) {
    std::set<std::string> families;
    for (std::size_t i : c.held_out) families.insert(c.runs[i].family);
    for (const auto& family : families) {
      std::vector<std::size_t> runs;
      for (std::size_t i : c.held_out) {
        if (c.runs[i].family == family) runs.push_back(i);
      }
      c.held_out_families.push_back(fold_of(c, family, runs, c.thresholds));
    }
    c.held_out_all = fold_of(c, "all", c.held_out, c.thresholds);
  }
  c.thresholds.evidence = status_evidence(c, c.thresholds);
  c.thresholds.outcome_rule = rule_text(options.rule);

  std::vector<std::vector<double>> columns;
  for (std::size_t k = 0; k < c.used.size(); ++k) {
    const auto figs = single_figures(c.runs[c.used[k]].components);
    if (k == 0) {
      columns.resize(figs.size());
      for (const auto& [name, v] : figs) c.single_figure_auc.emplace_back(name, 0.0);
    }
    for (std::size_t f = 0; f < figs.size(); ++f) columns[f].push_back(figs[f].second);
  }
  for (std::size_t f = 0; f < columns.size(); ++f) c.single_figure_auc[f].second = auc(columns[f], labels);
  c.per_recipe = recipe_scores(c);
  return c;
}

std::vector<int> labels_of_path(const std::vector<LabelledPath>& paths, std::size_t n_runs, const std::string& label) {
  std::vector<int> out(n_runs, -1);
  for (const LabelledPath& p : paths) {
    if (p.label == label && p.run < n_runs) out[p.run] = p.outcome.divergent ? 1 : 0;
  }
  return out;
}

namespace {

// The `fail` of an FP8 recipe's key bound (a mix: its base recipe's); nullopt for the
// dynamic-scale recipes, which are not judged, and for an FP8 recipe the key bound has no
// thresholds for (check::is_fp8_recipe).
std::optional<double> fp8_fail_threshold(const std::string& recipe) {
  const std::string base = recipe.substr(0, recipe.find('+'));
  if (!check::is_fp8_recipe(base)) return std::nullopt;
  const auto t = check::fp8_static_thresholds(base);
  return t ? std::optional<double>(t->fail) : std::nullopt;
}

RecipeScore recipe_score(const Calibration& c, const std::string& label) {
  RecipeScore r;
  r.path = label;
  r.recipe = recipe_of_path(label);
  r.fp8 = is_fp8_path(label);
  const auto path_labels = labels_of_path(c.paths, c.runs.size(), label);
  std::vector<std::size_t> runs;
  std::vector<int> labels;
  for (std::size_t i : c.used) {
    if (path_labels[i] < 0) continue;
    runs.push_back(i);
    labels.push_back(path_labels[i]);
  }
  const Scored b = braidinfer_scored(c, runs);
  r.braidinfer = score_set(b.risk, b.predicted, labels, c.options);
  const Scored f = scored_under(c, runs, c.options.baseline_thresholds());
  r.fusecheck = score_set(f.risk, f.predicted, labels, c.options);
  if (!r.fp8) return r;
  r.fp8_fail = fp8_fail_threshold(r.recipe);
  Scored k;
  std::vector<int> k_labels;
  for (std::size_t n = 0; n < runs.size(); ++n) {
    const double figure = c.runs[runs[n]].fp8_key_bound;
    if (!std::isfinite(figure)) continue;  // checkpoint gone: the figure was not read
    k.risk.push_back(figure);
    k.predicted.push_back(r.fp8_fail && figure > *r.fp8_fail ? 1 : 0);
    k_labels.push_back(labels[n]);
  }
  r.fp8_key_bound = score_set(k.risk, k.predicted, k_labels, c.options);
  return r;
}

}  // namespace

std::vector<RecipeScore> recipe_scores(const Calibration& c) {
  std::vector<std::string> labels;
  for (const LabelledPath& p : c.paths) {
    if (std::find(labels.begin(), labels.end(), p.label) == labels.end()) labels.push_back(p.label);
  }
  std::vector<RecipeScore> out;
  for (const auto& label : labels) out.push_back(recipe_score(c, label));
  return out;
}

std::vector<std::pair<std::string, double>> single_figures(std::span<const StaticComponent> components) {
  const FigureMaxima m = figure_maxima(components);
  int qk_layers = 0, amplifying = 0;
  for (const auto& c : components) {
    if (c.name != "qk.amplification") continue;
    ++qk_layers;
    amplifying += c.value >= 2.0 ? 1 : 0;
  }
  std::vector<std::pair<std::string, double>> out;
  for (int k = 0; k < kFigures; ++k) out.emplace_back(std::string(figure_name(k)), m[static_cast<std::size_t>(k)]);
  out.emplace_back("share of layers with qk_amplification >= 2",
                   qk_layers ? static_cast<double>(amplifying) / qk_layers : 0.0);
  return out;
}

std::string thresholds_file_json(const Calibration& c) {
  // Ordered: the schema's keys first, as thresholds_to_json writes them, then ours.
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(check::thresholds_to_json(c.thresholds));
  nlohmann::ordered_json cal;
  cal["runs"] = c.used.size();
  cal["divergent"] = std::count_if(c.used.begin(), c.used.end(), [&](std::size_t i) { return c.labels[i] == 1; });
  cal["held_out_runs"] = c.held_out.size();
  cal["held_out_family_names"] = c.options.held_out_families;
  cal["outcome_rule"] = {{"margin_floor_nats", c.options.rule.margin_floor},
                         {"kl_mean_limit_nats", c.options.rule.kl_mean_limit},
                         {"top1_confident_min", c.options.rule.top1_confident_min}};
  cal["max_miss_rate"] = c.options.max_miss_rate;
  cal["bootstrap"] = {{"resamples", c.options.bootstrap_resamples}, {"seed", c.options.seed}};
  cal["braidinfer"] = evaluation_json(c.braidinfer, false);
  cal["fusecheck_default"] = evaluation_json(c.fusecheck, false);
  cal["fusecheck_fitted"] = evaluation_json(c.fitted, false);
  cal["leave_one_family_out"] = cross_validation_json(c.by_family);
  cal["leave_one_seed_out"] = cross_validation_json(c.by_seed);
  nlohmann::json held = nlohmann::json::array();
  for (const auto& f : c.held_out_families) held.push_back(fold_json(f));
  cal["held_out_families"] = held;
  cal["held_out_all"] = c.held_out_all ? fold_json(*c.held_out_all) : nlohmann::json(nullptr);
  nlohmann::json recipes = nlohmann::json::array();
  for (const RecipeScore& r : c.per_recipe) {
    nlohmann::json one = {{"path", r.path},
                          {"recipe", r.recipe},
                          {"fp8", r.fp8},
                          {"braidinfer", set_score_json(r.braidinfer)},
                          {"fusecheck_default", set_score_json(r.fusecheck)}};
    if (r.fp8) {
      one["fp8_key_bound"] = set_score_json(r.fp8_key_bound);
      one["fp8_key_bound"]["scale"] = 1.0;
      one["fp8_key_bound"]["fail"] = r.fp8_fail ? nlohmann::json(*r.fp8_fail) : nlohmann::json(nullptr);
    }
    recipes.push_back(one);
  }
  cal["per_recipe"] = recipes;
  j["calibration"] = cal;
  return j.dump(2) + "\n";
}

nlohmann::json report_data(const Calibration& c) {
  nlohmann::json j = nlohmann::json::parse(thresholds_file_json(c));
  j["default_thresholds"] = ramps_json(c.options.baseline_thresholds());
  j["evaluations"] = {{"braidinfer", evaluation_json(c.braidinfer, true)},
                      {"fusecheck_default", evaluation_json(c.fusecheck, true)},
                      {"fusecheck_fitted", evaluation_json(c.fitted, true)}};
  nlohmann::json runs = nlohmann::json::array();
  for (std::size_t i = 0; i < c.runs.size(); ++i) {
    const RunRecord& r = c.runs[i];
    const FigureMaxima m = figure_maxima(r.components);
    nlohmann::json figures;
    for (int k = 0; k < kFigures; ++k) figures[std::string(figure_name(k))] = m[static_cast<std::size_t>(k)];
    runs.push_back({{"file", r.file}, {"family", r.family}, {"params", r.params}, {"seed", r.seed},
                    {"model", r.model}, {"n_layers", r.n_layers}, {"label", c.labels[i]},
                    {"braidinfer_score", num(r.braidinfer.score)}, {"braidinfer_status", r.braidinfer.status},
                    {"fusecheck_score", num(rescore(r.components, c.options.baseline_thresholds()))},
                    {"fitted_score", num(rescore(r.components, c.thresholds))}, {"figures", figures},
                    {"fp8_key_bound", num(r.fp8_key_bound)},
                    {"primary", r.primary_path() ? r.primary_path()->label : ""},
                    {"held_out", std::find(c.held_out.begin(), c.held_out.end(), i) != c.held_out.end()}});
  }
  j["runs"] = runs;
  nlohmann::json singles = nlohmann::json::array();
  for (const auto& [name, a] : c.single_figure_auc) singles.push_back({{"figure", name}, {"auc", num(a)}});
  j["single_figure_auc"] = singles;
  nlohmann::json paths = nlohmann::json::array();
  for (const auto& p : c.paths) {
    const PathRecord* rec = c.runs[p.run].find_path(p.label);
    nlohmann::json margins_flipped = nlohmann::json::array();
    for (std::size_t k = 0; k < rec->top1_match.size(); ++k) {
      if (rec->top1_match[k] == 0) margins_flipped.push_back(num(rec->ref_margin[k]));
    }
    paths.push_back({{"run", p.run}, {"label", p.label}, {"role", p.role}, {"kl_mean", num(p.e2e.kl_mean)},
                     {"top1_all", num(p.e2e.top1_all)}, {"top1_confident", num(p.e2e.top1_confident)},
                     {"confident_positions", p.e2e.confident_positions}, {"positions", p.e2e.positions},
                     {"greedy_first_mismatch", p.e2e.greedy_first_mismatch}, {"greedy_steps", p.e2e.greedy_steps},
                     {"nonfinite", p.e2e.nonfinite}, {"divergent", p.outcome.divergent}, {"reason", p.outcome.reason},
                     {"flipped_margins", margins_flipped},
                     {"logits_propagated_error", num(rec->logits_propagated_error)},
                     {"unit_roundoff", rec->unit_roundoff}});
  }
  j["paths"] = paths;
  return j;
}

std::string summary_text(const Calibration& c) {
  std::string s;
  const auto divergent = std::count_if(c.used.begin(), c.used.end(), [&](std::size_t i) { return c.labels[i] == 1; });
  s += fmt::format("fusecheck calibrate: {} design runs labelled by their fused bf16 path, {} divergent; {} runs of "
                   "held-out families (never fitted on)\n", c.used.size(), divergent, c.held_out.size());
  s += fmt::format("outcome rule: {}\n", rule_text(c.options.rule));
  s += fmt::format("results identity (sha256 of the files): {}\n\n", c.identity);
  s += "design runs (in-sample for the fitted thresholds):\n";
  s += fmt::format("{:<32} {:>6} {:>18} {:>10} {:>10} {:>10}\n", "scorer", "AUC", "95% bootstrap", "rho layer",
                   "(median)", "rho model");
  for (const ScorerEvaluation* e : {&c.braidinfer, &c.fusecheck, &c.fitted}) {
    s += fmt::format("{:<32} {:>6.3f} {:>18} {:>10.3f} {:>10.3f} {:>10.3f}\n", e->name, e->auc,
                     fmt_interval(e->auc_interval), e->spearman_layers_pooled, e->spearman_layers_median,
                     e->spearman_model);
  }
  s += "\nconfusion on the design runs (predicted INCOMPATIBLE vs divergent):\n";
  for (const ScorerEvaluation* e : {&c.braidinfer, &c.fusecheck, &c.fitted}) {
    s += fmt::format("  {:<32} {}\n", e->name, fmt_confusion(e->confusion));
  }
  s += fmt::format("\nthresholds (warn / fail):      default            fitted (fail at miss <= {:g})\n",
                   c.options.max_miss_rate);
  for (int k = 0; k < kFigures; ++k) {
    const check::Ramp& d = c.options.baseline_thresholds().*ramp_member(k);
    const check::Ramp& f = c.thresholds.*ramp_member(k);
    const bool used = std::isfinite(c.fail_fit.cuts[static_cast<std::size_t>(k)]);
    s += fmt::format("  {:<24} {:>8.3g} / {:<8.3g} {:>8.3g} / {:<8.3g} {}\n", figure_name(k), d.warn, d.fail, f.warn,
                     f.fail, used ? "" : "(no cut needed: above every value seen)");
  }
  const auto row = [](const HeldOutFold& f) {
    return fmt::format("  {:<14} runs {:3d} div {:3d}  fitted {}  default {}  braidinfer {}\n", f.key,
                       f.fusecheck.runs, f.fusecheck.positives, fmt_auc(f.fusecheck), fmt_auc(f.fusecheck_default),
                       fmt_auc(f.braidinfer));
  };
  const auto confusions = [](const HeldOutFold& f) {
    return fmt::format("    fitted     {}\n    default    {}\n    braidinfer {}\n", fmt_confusion(f.fusecheck.confusion),
                       fmt_confusion(f.fusecheck_default.confusion), fmt_confusion(f.braidinfer.confusion));
  };
  for (const CrossValidation* cv : {&c.by_family, &c.by_seed}) {
    s += fmt::format("\nleave one {} out (fit on the others, score this one; AUC and 95% bootstrap):\n", cv->by);
    for (const auto& f : cv->folds) s += row(f);
    s += fmt::format("  {:<14} runs {:3d} div {:3d}  fitted {}\n", "pooled", cv->pooled.runs, cv->pooled.positives,
                     fmt_auc(cv->pooled));
    s += fmt::format("    pooled     {}\n", fmt_confusion(cv->pooled.confusion));
  }
  if (c.held_out_all) {
    s += "\nheld-out families (never fitted on), scored with the fitted thresholds:\n";
    for (const auto& f : c.held_out_families) s += row(f);
    s += row(*c.held_out_all);
    s += confusions(*c.held_out_all);
  }
  s += "\nsweep evidence (every labelled run, fitted thresholds): ";
  const char* names[] = {"COMPATIBLE", "WARNING", "INCOMPATIBLE"};
  for (std::size_t k = 0; k < 3; ++k) {
    const auto& e = (*c.thresholds.evidence)[k];
    s += fmt::format("{}{} {} of {} diverged", k ? "; " : "", names[k], e.divergent, e.runs);
  }
  s += "\n\nsingle weights-only figures (the largest value per model; AUC of the figure alone on the design runs):\n";
  for (const auto& [name, a] : c.single_figure_auc) s += fmt::format("  {:<50} {:>6.3f}\n", name, a);
  s += per_recipe_text(c);
  return s;
}

// Not results::run_report_script: that one runs scripts/report only.
int render_report_html(const std::string& data_json, const std::string& html) {
  const char* env = std::getenv("FUSECHECK_CALIBRATION_REPORT_SCRIPT");
  const std::string script = env && *env ? env : std::string(FUSECHECK_SOURCE_DIR) + "/scripts/calibration-report";
  if (!std::filesystem::is_regular_file(script)) throw InputError(script, "calibration report script not found");
  std::string python = std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  std::vector<std::string> args = {python, script, data_json, "--out", html};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawnp(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
    throw InputError(python, "cannot start the calibration report script");
  }
  int status = 0;
  if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)) return 70;
  return WEXITSTATUS(status);
}

}  // namespace fusecheck::calibrate
