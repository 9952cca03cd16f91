// HDF5 writer for run results (docs/results-format.md), on the results area's H5Writer.
#include "harness/run/run_writer.h"

#include <unistd.h>

#include <cmath>
#include <system_error>

#include "harness/core/error.h"
#include "harness/core/temp_files.h"
#include "harness/results/h5_write.h"
#include "harness/run/invariance_output.h"

namespace fusecheck::run {

namespace {

using results::H5Writer;
using Dims = std::vector<std::uint64_t>;

std::vector<std::string> tap_names(std::span<const Tap> taps) {
  std::vector<std::string> names;
  for (Tap t : taps) names.emplace_back(tap_name(t));
  return names;
}

void write_mode_table(H5Writer& w, const std::string& group, const ModeTable& t, int n_layers) {
  w.group(group);
  const auto L = static_cast<std::uint64_t>(n_layers);
  for (const auto& field : kMetricFields) {
    std::vector<double> layer_values, head_values;
    for (const auto& row : t.layers) {
      for (const auto& cell : row) layer_values.push_back(cell ? (*cell).*field.member : kNaN);
    }
    for (const auto& cell : t.head) head_values.push_back(cell ? (*cell).*field.member : kNaN);
    w.numbers(group + "/" + std::string(field.name), {L, kNumLayerTaps}, layer_values);
    w.numbers(group + "/head/" + std::string(field.name), {kNumHeadTaps}, head_values);
  }
  std::vector<int> present, gate, head_present, head_gate;
  for (std::size_t l = 0; l < t.layers.size(); ++l) {
    for (int c = 0; c < kNumLayerTaps; ++c) {
      present.push_back(t.layers[l][c] ? 1 : 0);
      gate.push_back(t.gate[l][c]);
    }
  }
  for (int c = 0; c < kNumHeadTaps; ++c) {
    head_present.push_back(t.head[c] ? 1 : 0);
    head_gate.push_back(t.head_gate[c]);
  }
  w.int8s(group + "/present", {L, kNumLayerTaps}, present);
  w.int8s(group + "/gate", {L, kNumLayerTaps}, gate);
  w.int8s(group + "/head/present", {kNumHeadTaps}, head_present);
  w.int8s(group + "/head/gate", {kNumHeadTaps}, head_gate);
  w.attr(group, "first_divergent_layer", static_cast<long long>(t.first_divergent_layer));
  w.attr(group, "first_divergent_tap",
         t.first_divergent_tap ? std::string(tap_name(*t.first_divergent_tap)) : std::string());
  w.attr(group, "gate_failures", static_cast<long long>(t.gate_failures));
}

void write_timing(H5Writer& w, const std::string& group, const Timing& t, const TimingSpec& spec,
                  int n_layers) {
  w.group(group);
  w.attr(group, "clock", t.clock);
  w.attr(group, "warmup", static_cast<long long>(spec.warmup));
  w.attr(group, "repetitions", static_cast<long long>(spec.repetitions));
  w.attr_int8(group, "cold_l2", spec.cold_l2 ? 1 : 0);
  w.attr(group, "copy_bandwidth_gbps", t.copy_bandwidth_gbps);
  w.numbers(group + "/layer_ms", {static_cast<std::uint64_t>(n_layers)}, t.layer_ms);
  if (t.op_names.empty() || static_cast<int>(t.ops.size()) != n_layers) return;
  const auto K = t.op_names.size();
  w.strings(group + "/op_names", t.op_names);
  std::vector<double> median, p10, p90, bytes, flops, gbps, pct;
  for (const auto& layer : t.ops) {
    for (std::size_t k = 0; k < K; ++k) {
      const OpTiming* op = k < layer.size() ? &layer[k] : nullptr;
      median.push_back(op ? op->median_ms : kNaN);
      p10.push_back(op ? op->p10_ms : kNaN);
      p90.push_back(op ? op->p90_ms : kNaN);
      bytes.push_back(op ? op->bytes : kNaN);
      flops.push_back(op ? op->flops : kNaN);
      const double rate = (op && op->median_ms > 0) ? op->bytes / (op->median_ms * 1e-3) / 1e9 : kNaN;
      gbps.push_back(rate);
      pct.push_back(t.copy_bandwidth_gbps > 0 ? 100.0 * rate / t.copy_bandwidth_gbps : kNaN);
    }
  }
  const Dims dims{static_cast<std::uint64_t>(n_layers), K};
  w.numbers(group + "/op_median_ms", dims, median);
  w.numbers(group + "/op_p10_ms", dims, p10);
  w.numbers(group + "/op_p90_ms", dims, p90);
  w.numbers(group + "/op_bytes", dims, bytes);
  w.numbers(group + "/op_flops", dims, flops);
  w.numbers(group + "/op_gbps", dims, gbps);
  w.numbers(group + "/op_pct_copy_bw", dims, pct);
}

void write_dumps(H5Writer& w, const std::string& label, const std::vector<Dump>& dumps) {
  for (const auto& d : dumps) {
    const std::string g = "/dumps/" + label + "/" + d.mode + "/L" + std::to_string(d.layer) + "_" +
                          std::string(tap_name(d.tap));
    const Dims dims{static_cast<std::uint64_t>(d.reference.rows()), static_cast<std::uint64_t>(d.reference.cols())};
    w.numbers(g + "/reference", dims, std::vector<double>(d.reference.data(), d.reference.data() + d.reference.size()));
    w.numbers(g + "/path", dims, std::vector<double>(d.path.data(), d.path.data() + d.path.size()));
  }
}

// Where the run's time went (docs/results-format.md, /phases); written last so that
// results_write covers the rest of this file (all but closing it and the rename).
void write_phases(H5Writer& w, const PhaseTimes& phases, double write_wall0, double write_cpu0) {
  PhaseTimes all = phases;
  all.add("results_write", wall_seconds() - write_wall0, process_cpu_seconds() - write_cpu0);
  std::vector<std::string> names;
  std::vector<double> wall, cpu, spans;
  for (const auto& p : all.entries()) {
    names.push_back(p.name);
    wall.push_back(p.wall_s);
    cpu.push_back(p.cpu_s);
    spans.push_back(p.spans);
  }
  w.group("/phases");
  w.attr("/phases", "clock", std::string("wall: steady clock; cpu: process CPU time, all threads"));
  w.strings("/phases/names", names);
  const std::vector<std::uint64_t> dims{names.size()};
  w.numbers("/phases/wall_s", dims, wall);
  w.numbers("/phases/cpu_s", dims, cpu);
  w.numbers("/phases/spans", dims, spans);
}

void write_contents(H5Writer& w, const RunRecord& rec) {
  const double write_wall0 = wall_seconds(), write_cpu0 = process_cpu_seconds();
  const RunResult& r = *rec.result;
  const int L = rec.n_layers;
  const auto UL = static_cast<std::uint64_t>(L);
  w.attr("/", "format", std::string("fusecheck-run"));
  w.attr("/", "format_version", static_cast<long long>(kResultsFormatVersion));
  for (const auto& a : rec.attrs) {
    std::visit([&](const auto& v) {
      using V = std::decay_t<decltype(v)>;
      if constexpr (std::is_same_v<V, RootAttr::Flag>) {
        w.attr_int8("/", a.name, v.value ? 1 : 0);
      } else {
        w.attr("/", a.name, v);
      }
    }, a.value);
  }
  w.strings("/taps", tap_names(kLayerTaps));
  w.strings("/head_taps", tap_names(kHeadTaps));
  std::vector<int> ids;
  for (const auto& seq : rec.tokens) ids.insert(ids.end(), seq.begin(), seq.end());
  w.int32s("/tokens", {rec.tokens.size(), rec.tokens.empty() ? 0 : rec.tokens[0].size()}, ids);

  w.group("/reference");
  w.attr("/reference", "name", r.reference_label);
  w.attr("/reference", "device", r.reference_device);
  if (r.noise_floor_isolated) write_mode_table(w, "/reference/noise_floor/isolated", *r.noise_floor_isolated, L);
  if (r.noise_floor_propagated) write_mode_table(w, "/reference/noise_floor/propagated", *r.noise_floor_propagated, L);
  if (r.noise_floor_isolated || r.noise_floor_propagated) w.attr("/reference/noise_floor", "path", r.ref64_label);
  write_timing(w, "/timing/" + r.reference_label, r.reference_timing, rec.timing, L);

  w.group("/paths");
  w.group("/end_to_end");
  w.attr("/end_to_end", "greedy_steps", static_cast<long long>(rec.greedy_steps));
  if (rec.greedy_steps > 0) {
    w.int32s("/end_to_end/reference_greedy_tokens", {r.reference_greedy.size()},
             std::vector<int>(r.reference_greedy.begin(), r.reference_greedy.end()));
    if (!rec.greedy_text.empty()) w.attr("/end_to_end", "reference_greedy_text", rec.reference_greedy_text);
  }
  for (const auto& p : r.paths) {
    const std::string label = p.slot.label();
    const std::string g = "/paths/" + label;
    w.group(g);
    w.attr(g, "name", p.slot.name);
    w.attr(g, "recipe", p.slot.recipe);
    w.attr(g, "requested", p.slot.requested.label());
    w.attr(g, "role", p.slot.role);
    w.attr(g, "device", p.device);
    w.attr(g, "dtype", std::string(dtype_name(p.slot.dtype)));
    w.attr(g, "note", p.slot.note);
    if (p.isolated) write_mode_table(w, g + "/isolated", *p.isolated, L);
    if (p.propagated) write_mode_table(w, g + "/propagated", *p.propagated, L);
    const Amplification& a = p.amplification;
    const std::string ag = g + "/amplification";
    w.numbers(ag + "/local_error", {UL}, a.local_error);
    w.numbers(ag + "/propagated_error", {UL}, a.propagated_error);
    w.numbers(ag + "/amplification", {UL}, a.amplification);
    w.numbers(ag + "/accumulated_local", {UL}, a.accumulated_local);
    w.numbers(ag + "/layer_gain", {UL}, a.layer_gain);
    w.attr(ag, "end_to_end", a.end_to_end);
    w.attr(ag, "logits_local_error", a.logits_local_error);
    w.attr(ag, "logits_propagated_error", a.logits_propagated_error);
    w.attr(ag, "logits_amplification", a.logits_amplification);

    const std::string eg = "/end_to_end/" + label;
    w.group(eg);
    if (p.end_to_end) {
      w.numbers(eg + "/kl", {p.end_to_end->kl.size()}, p.end_to_end->kl);
      w.attr(eg, "kl_mean", p.end_to_end->kl_mean);
      w.attr(eg, "kl_p99", p.end_to_end->kl_p99);
      w.attr(eg, "top1_agreement", p.end_to_end->top1_agreement);
      w.numbers(eg + "/ref_margin", {p.end_to_end->ref_margin.size()}, p.end_to_end->ref_margin);
      w.int8s(eg + "/top1_match", {p.end_to_end->top1_match.size()}, p.end_to_end->top1_match);
    }
    if (rec.greedy_steps > 0) {
      w.int32s(eg + "/greedy_tokens", {p.greedy_tokens.size()},
               std::vector<int>(p.greedy_tokens.begin(), p.greedy_tokens.end()));
      w.attr(eg, "greedy_first_mismatch", static_cast<long long>(p.greedy_first_mismatch));
      if (const auto t = rec.greedy_text.find(label); t != rec.greedy_text.end()) w.attr(eg, "greedy_text", t->second);
    }
    // recipe_headroom: the measured run; greedy_headroom: greedy decoding alone.
    for (const auto& [name, h] : {std::pair<const char*, const RecipeHeadroom*>{"recipe_headroom", &p.recipe_headroom},
                                  {"greedy_headroom", &p.greedy_headroom}}) {
      if (h->points.empty()) continue;
      const std::string hg = g + "/" + name;
      w.strings(hg + "/points", h->points);
      std::vector<double> ratio, overflow, saturated, flushed;
      for (const auto& row : h->by_layer) {
        for (const auto& v : row) {
          ratio.push_back(v.ratio);
          overflow.push_back(v.overflow);
          saturated.push_back(v.saturated);
          flushed.push_back(v.flushed);
        }
      }
      const Dims dims{h->by_layer.size(), h->points.size()};
      w.numbers(hg + "/ratio", dims, ratio);
      w.numbers(hg + "/overflow_count", dims, overflow);
      w.numbers(hg + "/saturation_count", dims, saturated);
      w.numbers(hg + "/flush_count", dims, flushed);
    }
    if (!p.kv_age.empty()) {
      const std::string kg = g + "/kv_age";
      std::vector<double> lo, hi, keys, err, by_layer;
      for (const auto& b : p.kv_age) {
        lo.push_back(b.lo);
        hi.push_back(b.hi);
        keys.push_back(b.keys);
        err.push_back(b.rel_error);
        by_layer.insert(by_layer.end(), b.rel_error_by_layer.begin(), b.rel_error_by_layer.end());
      }
      const std::size_t nb = p.kv_age.size();
      w.numbers(kg + "/age_lo", {nb}, lo);
      w.numbers(kg + "/age_hi", {nb}, hi);
      w.numbers(kg + "/keys", {nb}, keys);
      w.numbers(kg + "/rel_error", {nb}, err);
      w.numbers(kg + "/rel_error_by_layer", {nb, by_layer.size() / nb}, by_layer);
      w.attr(kg, "decode_steps", static_cast<long long>(rec.greedy_steps));
    }
    if (p.scale_delivery) {
      const ScaleDeliveryRecord& sd = *p.scale_delivery;
      const std::string sg = g + "/scale_delivery";
      const std::size_t n = sd.multipliers.size();
      w.numbers(sg + "/multiplier", {n}, sd.multipliers);
      w.numbers(sg + "/clipped", {n}, sd.clipped);
      w.numbers(sg + "/judged", {n}, sd.judged);
      w.numbers(sg + "/rel_l2", {n}, sd.rel_l2);
      w.attr(sg, "verdict", sd.verdict);
      w.attr(sg, "reference_multiplier", sd.reference_multiplier);
      w.attr(sg, "fp8_rel_l2", sd.fp8_rel_l2);
      w.attr(sg, "limit", sd.limit);
      w.attr(sg, "decode_steps", static_cast<long long>(sd.decode_steps));
    }
    write_timing(w, "/timing/" + label, p.timing, rec.timing, L);
    write_dumps(w, label, p.dumps);
  }

  if (r.perturb) {
    const PerturbResult& pr = *r.perturb;
    w.group("/perturb");
    w.attr("/perturb", "layer", static_cast<long long>(pr.spec.layer));
    w.attr("/perturb", "tap", std::string(tap_name(pr.spec.tap)));
    w.attr("/perturb", "relative_size", pr.spec.relative_size);
    w.attr("/perturb", "seed", static_cast<long long>(pr.seed));
    w.attr("/perturb", "path", pr.path);
    std::vector<double> sens;
    for (const auto& row : pr.sensitivity) sens.insert(sens.end(), row.begin(), row.end());
    w.numbers("/perturb/sensitivity", {UL, kNumLayerTaps}, sens);
    w.numbers("/perturb/head_sensitivity", {kNumHeadTaps},
              std::vector<double>(pr.head_sensitivity.begin(), pr.head_sensitivity.end()));
  }

  for (const auto& s : rec.statics) {
    const std::string g = "/static/" + s.scorer;
    w.group(g);
    w.attr(g, "status", s.status);
    w.attr(g, "score", s.score);
    w.attr(g, "estimated_amplification", s.estimated_amplification);
    w.attr(g, "reason", s.reason);
    w.numbers(g + "/layer_figure", {UL}, s.layer_figure);
  }
  for (const auto& c : rec.crosschecks) {
    const std::string g = "/crosscheck/" + c.scorer;
    w.group(g);
    w.attr(g, "path", c.path);
    w.attr(g, "spearman", c.spearman);
    w.attr_int8(g, "predicted_incompatible", c.predicted_incompatible ? 1 : 0);
    w.attr_int8(g, "observed_divergent", c.observed_divergent ? 1 : 0);
    w.attr(g, "verdict", c.verdict);
    w.numbers(g + "/static", {UL}, c.static_figure);
    w.numbers(g + "/observed", {UL}, c.observed);
  }
  if (r.invariance) write_invariance(w, *r.invariance);
  write_phases(w, r.phases, write_wall0, write_cpu0);
}

}  // namespace

void write_run_file(const std::filesystem::path& file, const RunRecord& record) {
  if (!record.result) throw std::logic_error("write_run_file: no result");
  std::error_code ec;
  if (file.has_parent_path()) {
    std::filesystem::create_directories(file.parent_path(), ec);
    if (ec) throw InputError(file.parent_path().string(), "cannot create the results folder: " + ec.message());
  }
  const RegisteredTemp registered(temp_path_for(file));  // removed on SIGINT/SIGTERM too
  const std::filesystem::path& tmp = registered.path();
  try {
    {
      H5Writer w(tmp);
      write_contents(w, record);
    }  // closed (flushed) before the rename
    std::filesystem::rename(tmp, file, ec);
    if (ec) throw InputError(file.string(), "cannot move the finished results into place: " + ec.message());
  } catch (...) {
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

}  // namespace fusecheck::run
