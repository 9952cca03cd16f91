// Progress bar and summary table of a run (see summary.h).
#include "harness/run/summary.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include <fmt/core.h>

#include "harness/run/invariance_output.h"

namespace fusecheck::run {

ProgressBar::ProgressBar(std::FILE* out, std::string what)
    : out_(out), what_(std::move(what)), tty_(isatty(fileno(out)) != 0),
      start_(std::chrono::steady_clock::now()) {}

void ProgressBar::update(int done, int total) {
  if (!tty_ || total <= 0) return;
  const int permille = 1000 * done / total;
  if (permille == last_permille_) return;
  last_permille_ = permille;
  constexpr int kWidth = 30;
  const int filled = kWidth * done / total;
  std::fprintf(out_, "\r%s [%s%s] %3d%% (%d/%d)", what_.c_str(), std::string(filled, '#').c_str(),
               std::string(kWidth - filled, '.').c_str(), permille / 10, done, total);
  std::fflush(out_);
}

void ProgressBar::done() {
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::fprintf(out_, "%s%s: done in %.2f s\n", tty_ ? "\r\033[K" : "", what_.c_str(), s);
  std::fflush(out_);
}

namespace {

std::string sci(double v) {
  if (std::isnan(v)) return "-";
  if (std::isinf(v)) return "inf";
  return fmt::format("{:.2e}", v);
}
std::string fixed(double v, int decimals = 2) {
  if (std::isnan(v)) return "-";
  if (std::isinf(v)) return "inf";
  return fmt::format("{:.{}f}", v, decimals);
}

const PathResult* find_role(const RunResult& r, const std::string& role) {
  for (const auto& p : r.paths) {
    if (p.slot.role == role) return &p;
  }
  return nullptr;
}

}  // namespace

std::string format_summary(const SummaryInput& in) {
  const RunResult& r = *in.result;
  std::string out = in.title + "\n";
  if (!in.prompt.empty()) out += fmt::format("  prompt: \"{}\"\n", in.prompt);
  for (const auto& n : in.notes) out += "  note: " + n + "\n";

  // Columns for the fused and standard roles (else the first paths listed).
  std::vector<const PathResult*> shown;
  for (const char* role : {"fused", "standard"}) {
    if (const auto* p = find_role(r, role)) shown.push_back(p);
  }
  for (const auto& p : r.paths) {
    if (shown.size() >= 2) break;
    if (std::find(shown.begin(), shown.end(), &p) == shown.end()) shown.push_back(&p);
  }

  std::string header = fmt::format("{:>5} ", "layer");
  std::string sub = fmt::format("{:>5} ", "");
  for (const auto* p : shown) {
    header += fmt::format("| {:<29.29} ", p->slot.label());
    sub += fmt::format("| {:>9} {:>9} {:>9} ", "local", "propag.", "amplif.");
  }
  header += fmt::format("| {:<26} ", "time ms");
  std::string time_cols;
  for (const auto* p : shown) time_cols += fmt::format("{:>8.8} ", p->slot.role);
  time_cols += fmt::format("{:>8} ", "ref");
  sub += "| " + time_cols;
  for (const auto& s : in.statics) {
    header += fmt::format("| {:>10.10} ", s.scorer);
    sub += fmt::format("| {:>10} ", "static");
  }
  out += header + "\n" + sub + "\n";

  for (int l = 0; l < in.n_layers; ++l) {
    std::string row = fmt::format("{:>5} ", l);
    for (const auto* p : shown) {
      const auto& a = p->amplification;
      row += fmt::format("| {:>9} {:>9} {:>9} ", sci(a.local_error[l]), sci(a.propagated_error[l]),
                         fixed(a.amplification[l]));
    }
    row += "| ";
    for (const auto* p : shown) row += fmt::format("{:>8} ", fixed(p->timing.layer_ms[l], 3));
    row += fmt::format("{:>8} ", fixed(r.reference_timing.layer_ms[l], 3));
    for (const auto& s : in.statics) row += fmt::format("| {:>10} ", fixed(s.layer_figure[l], 3));
    out += row + "\n";
  }
  {
    std::string row = fmt::format("{:>5} ", "logit");
    for (const auto* p : shown) {
      const auto& a = p->amplification;
      row += fmt::format("| {:>9} {:>9} {:>9} ", sci(a.logits_local_error), sci(a.logits_propagated_error),
                         fixed(a.logits_amplification));
    }
    out += row + "\n";
  }
  const std::string clocks = shown.empty() ? "" : shown.front()->timing.clock;
  out += fmt::format("(errors: relative L2 at resid_out vs {}; times: {})\n", r.reference_label, clocks);

  out += "\n";
  for (const auto& p : r.paths) {
    std::string line = fmt::format("{}: ", p.slot.label());
    const ModeTable* t = p.propagated ? &*p.propagated : (p.isolated ? &*p.isolated : nullptr);
    if (t && t->first_divergent_tap) {
      const std::string where = t->first_divergent_layer == in.n_layers
                                    ? "head"
                                    : fmt::format("layer {}", t->first_divergent_layer);
      line += fmt::format("first divergent op {} {} ({} gate failures); ", where,
                          tap_name(*t->first_divergent_tap), t->gate_failures);
    } else {
      line += "all gates pass; ";
    }
    line += fmt::format("end-to-end amplification {}", fixed(p.amplification.end_to_end));
    if (p.end_to_end) {
      line += fmt::format("; KL mean {} p99 {}; top-1 {:.1f}%", sci(p.end_to_end->kl_mean),
                          sci(p.end_to_end->kl_p99), 100.0 * p.end_to_end->top1_agreement);
    }
    if (in.greedy_steps > 0) {
      line += p.greedy_first_mismatch < 0
                  ? fmt::format("; greedy: {} of {} steps match", in.greedy_steps, in.greedy_steps)
                  : fmt::format("; greedy: first mismatch at step {}", p.greedy_first_mismatch);
    }
    out += line + "\n";
    // The text only where it differs from the reference's (printed once, below).
    const auto text = in.greedy_text.find(p.slot.label());
    if (text != in.greedy_text.end() && p.greedy_first_mismatch >= 0) {
      out += fmt::format("  greedy text: \"{}\"\n", text->second);
    }
    // FP8 values clipped at 448 (points named *.fp8), the measured run against greedy
    // decoding alone: static scales from a prefill clip later keys.
    const auto fp8_clips = [](const RecipeHeadroom& h) {
      double n = 0;
      for (std::size_t c = 0; c < h.points.size(); ++c) {
        if (!h.points[c].ends_with(".fp8")) continue;
        for (const auto& row : h.by_layer) n += std::isnan(row[c].saturated) ? 0 : row[c].saturated;
      }
      return n;
    };
    if (p.scale_delivery) {
      const ScaleDeliveryRecord& sd = *p.scale_delivery;
      std::string judged;
      for (std::size_t i = 0; i < sd.multipliers.size(); ++i) {
        if (sd.judged[i] > 0) {
          judged = fmt::format("x{:g} against x{:g}: {}", sd.multipliers[i], sd.reference_multiplier, sci(sd.rel_l2[i]));
        }
      }
      const std::string verdict = sd.verdict == "pass" ? "pass" : sd.verdict == "fail" ? "FAIL" : "FAIL (inconclusive)";
      out += fmt::format("  scale delivery: {}{} (limit {}; values clipped at x1: {})\n", verdict,
                         judged.empty() ? "" : ", " + judged, sci(sd.limit),
                         sd.clipped.empty() ? 0.0 : sd.clipped.front());
    }
    if (!p.greedy_headroom.points.empty() || !p.recipe_headroom.points.empty()) {
      const double run_clips = fp8_clips(p.recipe_headroom), greedy_clips = fp8_clips(p.greedy_headroom);
      if (run_clips > 0 || greedy_clips > 0) {
        out += fmt::format("  FP8 values clipped at 448: {} in the measured run, {} in greedy decoding\n", run_clips,
                           greedy_clips);
      }
    }
  }
  if (in.greedy_steps > 0 && !in.greedy_text.empty()) {
    out += fmt::format("{} greedy text ({} steps): \"{}\"\n", r.reference_label, in.greedy_steps,
                       in.reference_greedy_text);
  }
  if (r.noise_floor_propagated) {
    const auto& t = *r.noise_floor_propagated;
    out += fmt::format("{} vs {}: {}\n", r.reference_label, r.ref64_label,
                       t.gate_failures ? fmt::format("{} cells past FP32 accuracy", t.gate_failures)
                                       : std::string("within FP32 accuracy at every tap"));
  }
  if (r.perturb) {
    const auto& pr = *r.perturb;
    out += fmt::format("perturb {:.1e} at layer {} {}: sensitivity at resid_out by layer:", pr.spec.relative_size,
                       pr.spec.layer, tap_name(pr.spec.tap));
    for (int l = pr.spec.layer; l < in.n_layers; ++l) {
      out += " " + fixed(pr.sensitivity[l][layer_tap_index(Tap::resid_out)], 3);
    }
    out += fmt::format("; logits {}\n", fixed(pr.head_sensitivity[head_tap_index(Tap::logits)], 3));
  }
  for (std::size_t i = 0; i < in.statics.size(); ++i) {
    const auto& s = in.statics[i];
    std::string line = fmt::format("static {}: {} (score {:.2f})", s.scorer, s.status, s.score);
    if (i < in.crosschecks.size()) {
      const auto& c = in.crosschecks[i];
      line += fmt::format("; vs observed on {}: spearman {}, verdict {}", c.path.empty() ? "-" : c.path,
                          fixed(c.spearman), c.verdict);
    }
    out += line + "\n";
  }
  // Where the time went, largest first (wall seconds; process CPU seconds in brackets).
  if (!r.phases.entries().empty()) {
    std::vector<PhaseTime> ph = r.phases.entries();
    std::stable_sort(ph.begin(), ph.end(), [](const PhaseTime& a, const PhaseTime& b) {
      return a.name != "total" && (b.name == "total" || a.wall_s > b.wall_s);
    });
    std::string line = "time (wall s [cpu s]):";
    for (const auto& p : ph) line += fmt::format(" {} {:.2f} [{:.2f}];", p.name, p.wall_s, p.cpu_s);
    line.pop_back();
    out += line + "\n";
  }
  if (r.invariance) out += format_invariance_table(*r.invariance, in.n_layers);
  if (!in.results_file.empty()) out += "results: " + in.results_file + "\n";
  out += r.gate_failures == 0 ? "VERDICT: PASS (every gate holds)\n"
                              : fmt::format("VERDICT: FAIL ({} gate failures)\n", r.gate_failures);
  return out;
}

}  // namespace fusecheck::run
