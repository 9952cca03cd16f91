// Report rendering. The text form keeps the seed's layout (title, Model/Status/Score,
// "Issues Found", "Estimated error amplification", "Recommendations", and under -v the
// "Detailed Layer Analysis"), adding the reason, scorer, thresholds and identity lines.
#include "harness/check/report.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "harness/core/version.h"

namespace fusecheck::check {

namespace {

using ojson = nlohmann::ordered_json;

const std::string kRule(50, '=');

// JSON has no infinity: a ratio over a zero median is written as the string "inf".
ojson number(double v) {
  if (std::isfinite(v)) return v;
  if (std::isnan(v)) return "nan";
  return v > 0 ? "inf" : "-inf";
}

std::string thresholds_line(const Thresholds& t, Scorer scorer) {
  std::string s;
  if (scorer == Scorer::Braidinfer) {
    s = fmt::format("seed constants (safe ratio {:g}, warning ratio {:g}, extreme weight 10, max weight 20..50)",
                    t.braidinfer.safe_ratio, t.braidinfer.warning_ratio);
  } else {
    s = fmt::format("{} [{}{}{}]", t.source, t.file.empty() ? "in memory" : t.file,
                    t.created.empty() ? "" : ", created " + t.created, t.sweep.empty() ? "" : ", sweep " + t.sweep);
  }
  if (!t.overrides.empty()) s += "; overridden by " + t.overrides;
  return s;
}

// "Issues Found" lines: the seed's per-extreme-layer line, or our flagged components.
std::vector<std::string> issue_lines(const CompatibilityResult& r) {
  std::vector<std::string> lines;
  if (r.scorer == Scorer::Braidinfer) {
    for (const auto& l : r.layers) {
      if (!l.extreme) continue;
      lines.push_back(fmt::format("Layer {}: K norm max = {:.1f}, Q norm max = {:.1f}", l.layer,
                                  l.find(NormRole::KNorm)->max, l.find(NormRole::QNorm)->max));
    }
    return lines;
  }
  std::vector<const Component*> flagged;
  for (const auto& c : r.components) {
    if (c.score < r.thresholds.status.warning_below) flagged.push_back(&c);
  }
  std::stable_sort(flagged.begin(), flagged.end(), [](auto* a, auto* b) { return a->score < b->score; });
  for (const auto* c : flagged) {
    lines.push_back(fmt::format("{}{} = {:.2f} (warn {:g}, fail {:g}): component score {:.2f}",
                                c->layer >= 0 ? fmt::format("Layer {}: ", c->layer) : std::string("Model: "),
                                c->name, c->value, c->warn, c->fail, c->score));
  }
  return lines;
}

std::string bytes_text(std::uint64_t b) {
  if (b >= 1'000'000'000) return fmt::format("{:.2f} GB", b / 1e9);
  if (b >= 1'000'000) return fmt::format("{:.1f} MB", b / 1e6);
  if (b >= 1'000) return fmt::format("{:.1f} KB", b / 1e3);
  return fmt::format("{} bytes", b);
}

// What the sweep saw of models in this result's status (thresholds from calibration).
std::optional<std::string> evidence_line(const CompatibilityResult& r) {
  const Thresholds& t = r.thresholds;
  if (r.scorer != Scorer::Fusecheck || !t.evidence) return std::nullopt;
  const StatusEvidence& e = (*t.evidence)[static_cast<std::size_t>(status_exit_code(r.status))];
  if (e.runs == 0) {
    return fmt::format("no run of the calibration sweep scored {} under these thresholds", status_name(r.status));
  }
  return fmt::format("models scoring like this ({} under these thresholds) diverged in {} of {} sweep runs{}",
                     status_name(r.status), e.divergent, e.runs,
                     t.outcome_rule.empty() ? "" : " (divergent: " + t.outcome_rule + ")");
}

// What was read and how long it took: the norms always, the MLP only under --deep.
std::vector<std::string> read_lines(const CompatibilityResult& r) {
  std::vector<std::string> lines;
  if (r.model.norm_sha256.empty()) return lines;
  lines.push_back(fmt::format("Norm tensors read: {} ({}) in {:.1f} ms, sha256 {}", r.model.norm_tensors_read,
                              bytes_text(r.model.norm_bytes_read), 1e3 * r.norm_read_seconds, r.model.norm_sha256));
  if (r.scorer != Scorer::Fusecheck) return lines;
  if (!r.deep) {
    lines.push_back("Deep read: off (--deep also reads every MLP down projection to find super weights; "
                    "without it a planted super weight goes unseen)");
    return lines;
  }
  const DeepRead& d = *r.deep;
  std::string l = fmt::format("Deep read (--deep): {} down projections and {} gate/up rows, {} in {:.3f} s", d.tensors_read,
                              d.rows_read, bytes_text(d.bytes_read), d.seconds);
  if (d.seconds > 0 && d.bytes_read > 0) l += fmt::format(" ({:.2f} s per GB)", d.seconds / (d.bytes_read / 1e9));
  lines.push_back(l);
  const SuperWeight* top = nullptr;
  for (const auto& w : d.layers) {
    if (!top || w.figure > top->figure) top = &w;
  }
  if (top) {
    lines.push_back(fmt::format("Largest super-weight figure: {:.1f} at layer {} {}[{}, {}] = {:.4g} (entry {:.1f}x the "
                                "rms of the others, neuron rows {:.2f}x typical){}",
                                top->figure, top->layer, top->tensor, top->channel, top->neuron, top->value,
                                top->entry_gain, top->neuron_gain,
                                r.thresholds.super_weight.on() ? "" : "; not scored: these thresholds have no super_weight ramp"));
  }
  return lines;
}

std::string amplification_line(const CompatibilityResult& r) {
  if (r.scorer == Scorer::Braidinfer) return fmt::format("Estimated error amplification: {:.1f}x", r.estimated_amplification);
  const LayerResult* worst = nullptr;
  for (const auto& l : r.layers) {
    if (!worst || l.amplification > worst->amplification) worst = &l;
  }
  std::string s = fmt::format("Estimated error amplification: {:.2f}x (model)", r.estimated_amplification);
  if (worst) s += fmt::format(", {:.2f}x (worst layer, {})", worst->amplification, worst->layer);
  return s;
}

std::string tensor_line(const NormStats& n, Scorer scorer) {
  if (scorer == Scorer::Braidinfer) {
    // The seed's verbose line ("K norm: max=..., median=..., ratio=...").
    return fmt::format("{} norm: max={:.3f}, median={:.3f}, ratio={:.1f}{}", n.role == NormRole::KNorm ? "K" : "Q",
                       n.max, n.median, n.ratio, n.assumed_ones ? " (absent: taken as all ones)" : "");
  }
  std::string s = fmt::format("{:<10} max={:.3f}, median={:.3f}, ratio={:.1f}", norm_role_name(n.role), n.max,
                              n.median, n.ratio);
  if (n.role == NormRole::AttnNorm || n.role == NormRole::MlpNorm || n.role == NormRole::FinalNorm) {
    s += fmt::format(", gain={:.2f}", n.peak_gain);
  }
  if (n.extreme) s += "  EXTREME";
  return s;
}

std::string layer_header(const LayerResult& l, Scorer scorer) {
  if (scorer == Scorer::Braidinfer) return fmt::format("Layer {}:", l.layer);
  std::string s = fmt::format("Layer {}: amplification {:.2f}x", l.layer, l.amplification);
  if (l.find(NormRole::QNorm) || l.find(NormRole::KNorm)) s += fmt::format(" (qk {:.2f}x)", l.qk_amplification);
  return s;
}

std::string render_text(const CompatibilityResult& r, bool verbose) {
  std::string s;
  auto line = [&s](const std::string& l) { s += l + "\n"; };
  line("Model Compatibility Report");
  line(kRule);
  line("Model: " + (r.model.path.empty() ? std::string("(in memory)") : r.model.path));
  if (!r.model.architecture.empty()) {
    line(fmt::format("Architecture: {} ({}, {} layers)", r.model.architecture, r.model.format, r.model.n_layers));
  }
  line(fmt::format("Scorer: {}", scorer_name(r.scorer)));
  line(fmt::format("Status: {}", status_name(r.status)));
  line(fmt::format("Score: {:.2f}", r.score));
  line("Reason: " + r.reason);
  line("");
  line("Issues Found:");
  for (const auto& l : issue_lines(r)) line("- " + l);
  line("");
  line(amplification_line(r));
  line("");
  line("Recommendations:");
  for (const auto& rec : r.recommendations) line("- " + rec);
  line("");
  line("Thresholds: " + thresholds_line(r.thresholds, r.scorer));
  if (const auto e = evidence_line(r)) line("Sweep evidence: " + *e);
  for (const auto& l : read_lines(r)) line(l);
  if (!verbose) return s;

  line("");
  line(kRule);
  line("Detailed Layer Analysis:");
  line(kRule);
  for (const auto& l : r.layers) {
    line("");
    line(layer_header(l, r.scorer));
    for (const auto& n : l.norms) line("  " + tensor_line(n, r.scorer));
    if (r.scorer == Scorer::Braidinfer && l.extreme) line("  EXTREME WEIGHTS DETECTED");
    if (r.deep) {
      for (const auto& w : r.deep->layers) {
        if (w.layer != l.layer) continue;
        line(fmt::format("  {:<10} largest entry [{}, {}] = {:.4g}: {:.1f}x the others' rms, neuron rows {:.2f}x, figure {:.1f}",
                         "down_proj", w.channel, w.neuron, w.value, w.entry_gain, w.neuron_gain, w.figure));
      }
    }
  }
  if (r.final_norm) {
    line("");
    line("Final norm:");
    line("  " + tensor_line(*r.final_norm, r.scorer));
  }
  return s;
}

std::string render_markdown(const CompatibilityResult& r, bool verbose) {
  std::string s;
  auto line = [&s](const std::string& l) { s += l + "\n"; };
  line("# Model compatibility report");
  line("");
  line("| | |");
  line("|---|---|");
  line("| Model | `" + r.model.path + "` |");
  if (!r.model.architecture.empty()) {
    line(fmt::format("| Architecture | {} ({}, {} layers) |", r.model.architecture, r.model.format, r.model.n_layers));
  }
  line(fmt::format("| Scorer | {} |", scorer_name(r.scorer)));
  line(fmt::format("| Status | **{}** |", status_name(r.status)));
  line(fmt::format("| Score | {:.2f} |", r.score));
  line("| Amplification | " + amplification_line(r).substr(std::string("Estimated error amplification: ").size()) + " |");
  line("| Thresholds | " + thresholds_line(r.thresholds, r.scorer) + " |");
  if (const auto e = evidence_line(r)) line("| Sweep evidence | " + *e + " |");
  for (const auto& l : read_lines(r)) {
    const auto colon = l.find(':');
    line("| " + l.substr(0, colon) + " | " + l.substr(colon + 2) + " |");
  }
  line("");
  line("**Reason:** " + r.reason);
  line("");
  line("## Issues found");
  line("");
  const auto issues = issue_lines(r);
  if (issues.empty()) line("None.");
  for (const auto& l : issues) line("- " + l);
  line("");
  line("## Recommendations");
  line("");
  for (const auto& rec : r.recommendations) line("- " + rec);
  if (!verbose) return s;

  line("");
  line("## Per-layer analysis");
  line("");
  line("| Layer | Tensor | max | median | ratio | gain | layer amplification | |");
  line("|---:|---|---:|---:|---:|---:|---:|---|");
  auto row = [&](const std::string& layer, const NormStats& n, const std::string& amp, bool extreme) {
    const bool hidden = n.role == NormRole::AttnNorm || n.role == NormRole::MlpNorm || n.role == NormRole::FinalNorm;
    line(fmt::format("| {} | {} | {:.3f} | {:.3f} | {:.1f} | {} | {} | {} |", layer, norm_role_name(n.role), n.max,
                     n.median, n.ratio,
                     r.scorer == Scorer::Fusecheck && hidden ? fmt::format("{:.2f}", n.peak_gain) : std::string(),
                     amp, extreme ? "EXTREME" : ""));
  };
  for (const auto& l : r.layers) {
    for (const auto& n : l.norms) {
      const bool extreme = r.scorer == Scorer::Braidinfer ? l.extreme : n.extreme;
      row(std::to_string(l.layer), n, fmt::format("{:.3f}", l.amplification), extreme);
    }
  }
  if (r.final_norm) row("final", *r.final_norm, "", r.final_norm->extreme);
  return s;
}

ojson stats_json(const NormStats& n) {
  return ojson{{"role", norm_role_name(n.role)}, {"tensor", n.tensor},         {"numel", n.numel},
               {"max", number(n.max)},           {"median", number(n.median)}, {"ratio", number(n.ratio)},
               {"mean", number(n.mean)},         {"rms", number(n.rms)},       {"peak_gain", number(n.peak_gain)},
               {"extreme", n.extreme},           {"assumed_ones", n.assumed_ones}};
}

std::string render_json(const CompatibilityResult& r) {
  const Thresholds& t = r.thresholds;
  ojson j;
  j["tool"] = {{"name", "fusecheck check"}, {"version", version_string()}, {"git_sha", git_sha()}};
  j["model"] = {{"path", r.model.path},
                {"format", r.model.format},
                {"architecture", r.model.architecture},
                {"n_layers", r.model.n_layers},
                {"norm_sha256", r.model.norm_sha256},
                {"norm_tensors_read", r.model.norm_tensors_read},
                {"norm_bytes_read", r.model.norm_bytes_read}};
  j["scorer"] = scorer_name(r.scorer);
  j["status"] = status_name(r.status);
  j["score"] = number(r.score);
  j["reason"] = r.reason;
  j["estimated_amplification"] = number(r.estimated_amplification);
  j["recommendations"] = r.recommendations;
  ojson th;
  th["source"] = r.scorer == Scorer::Braidinfer ? std::string("seed constants") : t.source;
  th["created"] = t.created;
  th["sweep"] = t.sweep.empty() ? ojson(nullptr) : ojson(t.sweep);
  th["file"] = t.file;
  th["overrides"] = t.overrides;
  th["status"] = {{"warning_below", t.status.warning_below}, {"incompatible_below", t.status.incompatible_below}};
  th["braidinfer"] = {{"safe_ratio", t.braidinfer.safe_ratio}, {"warning_ratio", t.braidinfer.warning_ratio}};
  // The thresholds file's own form (ramps that are on, the sweep's evidence).
  const ojson file_form = ojson::parse(thresholds_to_json(t));
  th["fusecheck"] = file_form["fusecheck"];
  if (file_form.contains("evidence")) th["evidence"] = file_form["evidence"];
  j["thresholds"] = th;
  j["read"] = {{"norm_seconds", r.norm_read_seconds}, {"deep", r.deep.has_value()}};
  if (r.deep) {
    ojson dj{{"tensors_read", r.deep->tensors_read}, {"rows_read", r.deep->rows_read},
             {"bytes_read", r.deep->bytes_read}, {"seconds", r.deep->seconds}, {"layers", ojson::array()}};
    for (const auto& w : r.deep->layers) {
      dj["layers"].push_back({{"layer", w.layer}, {"tensor", w.tensor}, {"channel", w.channel}, {"neuron", w.neuron},
                              {"value", number(w.value)}, {"numel", w.numel}, {"entry_gain", number(w.entry_gain)},
                              {"neuron_gain", number(w.neuron_gain)}, {"figure", number(w.figure)}});
    }
    j["read"]["deep_read"] = dj;
  }
  if (const auto e = evidence_line(r)) j["evidence"] = *e;
  ojson comps = ojson::array();
  for (const auto& c : r.components) {
    ojson cj{{"name", c.name}, {"layer", c.layer}, {"value", number(c.value)}, {"score", number(c.score)}};
    if (r.scorer == Scorer::Fusecheck) {
      cj["warn"] = c.warn;
      cj["fail"] = c.fail;
    }
    comps.push_back(cj);
  }
  j["components"] = comps;
  ojson layers = ojson::array();
  for (const auto& l : r.layers) {
    ojson lj{{"layer", l.layer}, {"extreme", l.extreme}, {"amplification", number(l.amplification)}};
    if (r.scorer == Scorer::Fusecheck) lj["qk_amplification"] = number(l.qk_amplification);
    lj["norms"] = ojson::array();
    for (const auto& n : l.norms) lj["norms"].push_back(stats_json(n));
    layers.push_back(lj);
  }
  j["layers"] = layers;
  j["final_norm"] = r.final_norm ? stats_json(*r.final_norm) : ojson(nullptr);
  return j.dump(2) + "\n";
}

}  // namespace

std::optional<ReportFormat> report_format_from_name(std::string_view name) {
  if (name == "text") return ReportFormat::Text;
  if (name == "json") return ReportFormat::Json;
  if (name == "markdown") return ReportFormat::Markdown;
  return std::nullopt;
}

std::string render_report(const CompatibilityResult& result, ReportFormat format, bool verbose) {
  switch (format) {
    case ReportFormat::Json: return render_json(result);
    case ReportFormat::Markdown: return render_markdown(result, verbose);
    case ReportFormat::Text: break;
  }
  return render_text(result, verbose);
}

}  // namespace fusecheck::check
