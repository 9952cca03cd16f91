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
  return thresholds_from_cuts(fit_cuts(m, l, c.options.max_miss_rate), fit_cuts(m, l, 0.0), m);
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

std::string fmt_confusion(const Confusion& c) {
  return fmt::format("TP {:3d}  FP {:3d}  TN {:3d}  FN {:3d}  (miss {:.1f}%, false alarm {:.1f}%)", c.true_positive,
                     c.false_positive, c.true_negative, c.false_negative, 100 * c.miss_rate(), 100 * c.false_alarm_rate());
}

}  // namespace

Calibration calibrate(std::vector<RunRecord> runs, const CalibrateOptions& options) {
  Calibration c;
  c.options = options;
  c.identity = results_identity(runs);
  c.created = today();
  c.runs = std::move(runs);
  c.labels.assign(c.runs.size(), -1);
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
        c.used.push_back(i);
      }
      c.paths.push_back(std::move(lp));
    }
  }
  if (c.used.empty()) throw InputError("calibrate", "no run has a fused-role path to label (calibration sweeps list one)");
  const auto positives = std::count_if(c.used.begin(), c.used.end(), [&](std::size_t i) { return c.labels[i] == 1; });
  if (positives == 0 || positives == static_cast<long>(c.used.size())) {
    throw InputError("calibrate", fmt::format("all {} runs are {} under the outcome rule: a ROC needs both outcomes "
                                              "(widen the sweep)", c.used.size(), positives ? "divergent" : "non-divergent"));
  }

  const auto maxima = maxima_of(c, c.used);
  const auto labels = labels_of(c, c.used);
  c.fail_fit = fit_cuts(maxima, labels, options.max_miss_rate);
  c.warn_fit = fit_cuts(maxima, labels, 0.0);
  c.thresholds = thresholds_from_cuts(c.fail_fit, c.warn_fit, maxima);
  c.thresholds.source = fmt::format("fusecheck calibrate: fail cuts at miss rate <= {:g}, then fewest false alarms; "
                                    "warn cuts at no miss (docs/calibration.md)", options.max_miss_rate);
  c.thresholds.created = c.created;
  c.thresholds.sweep = c.identity;

  const check::Thresholds& defaults = check::default_thresholds();
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

  // Hold out each family in turn: fit on the others, score the family.
  std::set<std::string> families;
  for (std::size_t i : c.used) families.insert(c.runs[i].family);
  std::vector<double> oof_risk(c.used.size(), kNaN);
  for (const auto& family : families) {
    std::vector<std::size_t> train, test_pos;
    for (std::size_t k = 0; k < c.used.size(); ++k) {
      if (c.runs[c.used[k]].family == family) test_pos.push_back(k);
      else train.push_back(c.used[k]);
    }
    HeldOutFold fold;
    fold.family = family;
    fold.runs = static_cast<int>(test_pos.size());
    const auto train_labels = labels_of(c, train);
    const bool trainable = std::count(train_labels.begin(), train_labels.end(), 1) > 0;
    fold.thresholds = trainable ? fit_thresholds(c, train) : defaults;
    std::vector<double> risk;
    std::vector<int> predicted, test_labels;
    for (std::size_t k : test_pos) {
      const RunRecord& r = c.runs[c.used[k]];
      const double s = rescore(r.components, fold.thresholds);
      risk.push_back(1 - s);
      oof_risk[k] = 1 - s;
      predicted.push_back(s < fold.thresholds.status.incompatible_below ? 1 : 0);
      test_labels.push_back(labels[k]);
    }
    fold.positives = static_cast<int>(std::count(test_labels.begin(), test_labels.end(), 1));
    fold.auc = auc(risk, test_labels);
    fold.confusion = confusion(predicted, test_labels);
    c.folds.push_back(std::move(fold));
  }
  c.heldout_auc = auc(oof_risk, labels);
  c.heldout_auc_interval = bootstrap_auc(oof_risk, labels, options.bootstrap_resamples, options.seed);

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
  return c;
}

std::vector<std::pair<std::string, double>> single_figures(std::span<const StaticComponent> components) {
  const FigureMaxima m = figure_maxima(components);
  double log_sum = 0;
  int qk_layers = 0;
  for (const auto& c : components) {
    if (c.name != "qk.amplification") continue;
    log_sum += std::log(std::max(c.value, 1.0));
    ++qk_layers;
  }
  return {{"largest norm ratio", m[0]},
          {"largest hidden-norm gain", m[1]},
          {"largest q/k amplification", m[2]},
          {"model amplification (rms of layer figures)", m[3]},
          {"geometric mean of q/k amplification over layers", qk_layers ? std::exp(log_sum / qk_layers) : 1.0}};
}

std::string thresholds_file_json(const Calibration& c) {
  // Ordered: the schema's keys first, as thresholds_to_json writes them, then ours.
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(check::thresholds_to_json(c.thresholds));
  nlohmann::ordered_json cal;
  cal["runs"] = c.used.size();
  cal["divergent"] = std::count(c.labels.begin(), c.labels.end(), 1);
  cal["outcome_rule"] = {{"margin_floor_nats", c.options.rule.margin_floor},
                         {"kl_mean_limit_nats", c.options.rule.kl_mean_limit},
                         {"top1_confident_min", c.options.rule.top1_confident_min}};
  cal["max_miss_rate"] = c.options.max_miss_rate;
  cal["bootstrap"] = {{"resamples", c.options.bootstrap_resamples}, {"seed", c.options.seed}};
  cal["braidinfer"] = evaluation_json(c.braidinfer, false);
  cal["fusecheck_default"] = evaluation_json(c.fusecheck, false);
  cal["fusecheck_fitted"] = evaluation_json(c.fitted, false);
  cal["fusecheck_heldout_auc"] = num(c.heldout_auc);
  cal["fusecheck_heldout_auc_interval_95"] = interval_json(c.heldout_auc_interval);
  nlohmann::json folds = nlohmann::json::array();
  for (const auto& f : c.folds) {
    folds.push_back({{"family", f.family}, {"runs", f.runs}, {"divergent", f.positives}, {"auc", num(f.auc)},
                     {"confusion", confusion_json(f.confusion)}, {"fusecheck", ramps_json(f.thresholds)}});
  }
  cal["held_out_families"] = folds;
  j["calibration"] = cal;
  return j.dump(2) + "\n";
}

nlohmann::json report_data(const Calibration& c) {
  nlohmann::json j = nlohmann::json::parse(thresholds_file_json(c));
  j["default_thresholds"] = ramps_json(check::default_thresholds());
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
                    {"fusecheck_score", num(rescore(r.components, check::default_thresholds()))},
                    {"fitted_score", num(rescore(r.components, c.thresholds))}, {"figures", figures},
                    {"primary", r.primary_path() ? r.primary_path()->label : ""}});
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
  const auto divergent = std::count(c.labels.begin(), c.labels.end(), 1);
  s += fmt::format("fusecheck calibrate: {} runs labelled by their fused bf16 path, {} divergent (rule: non-finite, "
                   "KL mean > {:g} nats, or top-1 < {:g} where the reference margin > {:g} nats)\n",
                   c.used.size(), divergent, c.options.rule.kl_mean_limit, c.options.rule.top1_confident_min,
                   c.options.rule.margin_floor);
  s += fmt::format("results identity (sha256 of the files): {}\n\n", c.identity);
  s += fmt::format("{:<32} {:>6} {:>18} {:>10} {:>10} {:>10}\n", "scorer", "AUC", "95% bootstrap", "rho layer",
                   "(median)", "rho model");
  for (const ScorerEvaluation* e : {&c.braidinfer, &c.fusecheck, &c.fitted}) {
    s += fmt::format("{:<32} {:>6.3f} {:>18} {:>10.3f} {:>10.3f} {:>10.3f}\n", e->name, e->auc,
                     fmt_interval(e->auc_interval), e->spearman_layers_pooled, e->spearman_layers_median,
                     e->spearman_model);
  }
  s += fmt::format("fusecheck, held out by family       {:>6.3f} {:>18}\n\n", c.heldout_auc,
                   fmt_interval(c.heldout_auc_interval));
  s += "confusion (predicted INCOMPATIBLE vs divergent):\n";
  for (const ScorerEvaluation* e : {&c.braidinfer, &c.fusecheck, &c.fitted}) {
    s += fmt::format("  {:<32} {}\n", e->name, fmt_confusion(e->confusion));
  }
  s += "\nthresholds (warn / fail):      default            fitted\n";
  for (int k = 0; k < kFigures; ++k) {
    const check::Ramp& d = check::default_thresholds().*ramp_member(k);
    const check::Ramp& f = c.thresholds.*ramp_member(k);
    s += fmt::format("  {:<22} {:>8.3g} / {:<8.3g} {:>8.3g} / {:<8.3g}\n", figure_name(k), d.warn, d.fail, f.warn, f.fail);
  }
  s += "\nheld-out families (fit on the others, score this one):\n";
  for (const auto& f : c.folds) {
    s += fmt::format("  {:<12} runs {:3d}  divergent {:3d}  AUC {:>6}  {}\n", f.family, f.runs, f.positives,
                     std::isfinite(f.auc) ? fmt::format("{:.3f}", f.auc) : "n/a", fmt_confusion(f.confusion));
  }
  s += "\nsingle weights-only figures (diagnostic, not fitted: AUC of the figure alone):\n";
  for (const auto& [name, a] : c.single_figure_auc) s += fmt::format("  {:<50} {:>6.3f}\n", name, a);
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
