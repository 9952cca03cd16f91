// Results-file fixtures for the results tests (see fixture.h).
#include "tests/results/fixture.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>

#include <hdf5.h>

#include "harness/core/taps.h"
#include "harness/results/h5_tree.h"
#include "harness/results/h5_write.h"
#include "tests/common/test_support.h"

namespace fusecheck::test {

using results::H5Writer;

namespace {

std::vector<std::string> tap_names() {
  std::vector<std::string> out;
  for (Tap t : kLayerTaps) out.emplace_back(tap_name(t));
  return out;
}

// One mode group: errors that grow with depth (propagated) or stay flat (isolated),
// all cells present except q_normed/k_normed for a path that fuses them away.
void write_mode(H5Writer& w, const std::string& g, const FixtureSpec& s, bool propagated, double scale,
                std::mt19937& rng) {
  const std::size_t L = static_cast<std::size_t>(s.n_layers), T = kLayerTaps.size();
  std::uniform_real_distribution<double> jitter(0.8, 1.25);
  std::vector<double> rel(L * T), max_abs(L * T), zero(L * T, 0.0), ulp(L * T), cosine(L * T);
  std::vector<int> present(L * T, 1), gate(L * T, 1);
  for (std::size_t l = 0; l < L; ++l) {
    for (std::size_t t = 0; t < T; ++t) {
      double depth = propagated ? std::sqrt(1.0 + static_cast<double>(l)) : 1.0;
      rel[l * T + t] = scale * depth * jitter(rng);
      max_abs[l * T + t] = 20 * rel[l * T + t] * jitter(rng);
      ulp[l * T + t] = std::round(1 + 2 * jitter(rng));
      cosine[l * T + t] = 1 - rel[l * T + t] * rel[l * T + t] / 2;
    }
  }
  const std::vector<std::uint64_t> dims = {L, T};
  w.numbers(g + "/rel_l2", dims, rel);
  w.numbers(g + "/max_abs", dims, max_abs);
  w.numbers(g + "/max_rel", dims, max_abs);
  w.numbers(g + "/cosine", dims, cosine);
  w.numbers(g + "/ulp_p99", dims, ulp);
  for (const char* m : {"nan_count", "inf_count", "overflow_count", "saturation_count", "ref_nonfinite"}) {
    w.numbers(g + "/" + m, dims, zero);
  }
  w.int8s(g + "/present", dims, present);
  w.int8s(g + "/gate", dims, gate);
  w.numbers(g + "/head/rel_l2", {2}, {scale * 2 * jitter(rng), scale * 3 * jitter(rng)});
  w.numbers(g + "/head/nan_count", {2}, {0, 0});
  w.numbers(g + "/head/inf_count", {2}, {0, 0});
  w.int8s(g + "/head/present", {2}, {1, 1});
  w.int8s(g + "/head/gate", {2}, {1, 1});
  w.attr(g, "first_divergent_layer", -1LL);
  w.attr(g, "first_divergent_tap", "");
  w.attr(g, "gate_failures", 0LL);
}

}  // namespace

std::filesystem::path files_dir() {
  auto scratch = scratch_dir();
  auto dir = scratch.parent_path() / (scratch.filename().string() + ".files");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::size_t tap_index(const std::string& tap) {
  auto names = tap_names();
  return static_cast<std::size_t>(std::find(names.begin(), names.end(), tap) - names.begin());
}

void write_fixture_run(const std::filesystem::path& file, const FixtureSpec& s) {
  std::mt19937 rng(s.seed);
  const std::size_t L = static_cast<std::size_t>(s.n_layers);
  H5Writer w(file);
  w.attr("/", "format", "fusecheck-run");
  w.attr("/", "format_version", 1LL);
  w.attr("/", "fusecheck_version", "0.1.0");
  w.attr("/", "git_sha", "0123456789ab");
  w.attr_int8("/", "git_dirty", 0);
  w.attr("/", "argv", "fusecheck run scenarios/" + s.scenario + ".yaml");
  w.attr("/", "date_utc", "2026-11-26T03:00:00Z");
  w.attr("/", "hostname", "fixture");
  w.attr("/", "scenario_path", "scenarios/" + s.scenario + ".yaml");
  w.attr("/", "scenario_name", s.scenario);
  w.attr("/", "scenario_text", "name: " + s.scenario + "\n");
  w.attr("/", "device", s.device);
  w.attr("/", "device_name", s.device == "cpu" ? "cpu" : s.device_name);
  w.attr("/", "driver_version", "n/a");
  w.attr("/", "cuda_runtime_version", "n/a");
  w.attr("/", "library_versions", "eigen 3.4.0; hdf5 1.10.8");
  w.attr("/", "model_source", s.profile.empty() ? "path" : "synth");
  w.attr("/", "model_path", s.model_path);
  w.attr("/", "model_profile", s.profile);
  w.attr("/", "model_options", s.profile.empty() ? "" : "layers=" + std::to_string(s.n_layers));
  w.attr("/", "architecture", "qwen3");
  w.attr("/", "n_layers", static_cast<long long>(s.n_layers));
  w.attr("/", "hidden", 64LL);
  w.attr("/", "vocab", 512LL);
  w.attr("/", "batch", 1LL);
  w.attr("/", "phase", "prefill");
  w.attr("/", "n_tokens", 16LL);
  w.attr("/", "reference", s.device == "cpu" ? "ref32-cpu" : "ref32-cuda");
  w.attr_int8("/", "ref64", 0);
  w.attr("/", "modes", "isolated,propagated");
  w.attr_int8("/", "fallback_applied", 0);
  w.attr("/", "gate_failures", 0LL);
  w.attr("/", "status", "pass");
  w.attr("/", "wall_s", 1.5);
  w.strings("/taps", tap_names());
  w.strings("/head_taps", {"final_norm", "logits"});
  w.int32s("/tokens", {1, 16}, std::vector<int>(16, 7));

  std::uniform_real_distribution<double> jitter(0.9, 1.1);
  for (std::size_t p = 0; p < s.paths.size(); ++p) {
    const std::string& label = s.paths[p];
    std::string g = "/paths/" + label;
    double scale = p == 0 ? 4e-3 : 2e-3;  // bf16-sized errors; fused a bit larger
    write_mode(w, g + "/isolated", s, false, scale, rng);
    write_mode(w, g + "/propagated", s, true, scale, rng);
    w.attr(g, "name", label);
    w.attr(g, "role", p == 0 ? "fused" : "standard");
    w.attr(g, "dtype", "BF16");
    std::vector<double> local(L), prop(L), amp(L);
    for (std::size_t l = 0; l < L; ++l) {
      local[l] = scale * jitter(rng);
      prop[l] = local[l] * std::sqrt(1.0 + static_cast<double>(l)) * jitter(rng);
      amp[l] = prop[l] / local[l];
    }
    w.numbers(g + "/amplification/local_error", {L}, local);
    w.numbers(g + "/amplification/propagated_error", {L}, prop);
    w.numbers(g + "/amplification/amplification", {L}, amp);
    w.attr(g + "/amplification", "end_to_end", amp.back() / std::sqrt(static_cast<double>(L)));

    std::string e = "/end_to_end/" + label;
    w.numbers(e + "/kl", {16}, std::vector<double>(16, 1e-4 * (1 + static_cast<double>(p))));
    w.attr(e, "kl_mean", 1e-4 * (1 + static_cast<double>(p)));
    w.attr(e, "kl_p99", 3e-4 * (1 + static_cast<double>(p)));
    w.attr(e, "top1_agreement", 0.98);
    w.attr(e, "greedy_first_mismatch", -1LL);

    std::string t = "/timing/" + label;
    const std::size_t K = s.ops.size();
    std::vector<double> med(L * K), p10(L * K), p90(L * K), layer(L, 0.0);
    for (std::size_t l = 0; l < L; ++l) {
      for (std::size_t k = 0; k < K; ++k) {
        med[l * K + k] = 0.01 * (1 + static_cast<double>(k)) * jitter(rng);
        p10[l * K + k] = med[l * K + k] * (1 - s.timing_noise);
        p90[l * K + k] = med[l * K + k] * (1 + s.timing_noise);
        layer[l] += med[l * K + k];
      }
    }
    w.numbers(t + "/layer_ms", {L}, layer);
    w.strings(t + "/op_names", s.ops);
    w.numbers(t + "/op_median_ms", {L, K}, med);
    w.numbers(t + "/op_p10_ms", {L, K}, p10);
    w.numbers(t + "/op_p90_ms", {L, K}, p90);
    std::vector<double> gbps(L * K), pct(L * K);
    for (std::size_t i = 0; i < L * K; ++i) {
      gbps[i] = 1000 * jitter(rng);
      pct[i] = gbps[i] / 3000 * 100;
    }
    w.numbers(t + "/op_gbps", {L, K}, gbps);
    w.numbers(t + "/op_pct_copy_bw", {L, K}, pct);
    w.attr(t, "clock", "cuda-events");
    w.attr(t, "repetitions", static_cast<long long>(s.repetitions));
    w.attr(t, "copy_bandwidth_gbps", 3000.0);
  }
  w.attr("/end_to_end", "greedy_steps", 0LL);
  for (const char* scorer : {"braidinfer", "fusecheck"}) {
    std::string st = std::string("/static/") + scorer;
    w.group(st);
    w.attr(st, "status", "INCOMPATIBLE");
    w.attr(st, "score", 0.0);
    std::vector<double> fig(L);
    for (std::size_t l = 0; l < L; ++l) fig[l] = 10 + 10 * jitter(rng);
    w.numbers(st + "/layer_figure", {L}, fig);
    std::string cc = std::string("/crosscheck/") + scorer;
    w.group(cc);
    w.attr(cc, "path", s.paths.front());
    w.attr(cc, "verdict", "false alarm");
    w.attr(cc, "spearman", 0.1);
    w.numbers(cc + "/static", {L}, fig);
    w.numbers(cc + "/observed", {L}, std::vector<double>(L, 1.0));
  }
  std::vector<double> sens(L * kLayerTaps.size(), std::nan(""));
  for (std::size_t i = kLayerTaps.size(); i < sens.size(); ++i) sens[i] = 1 + 0.1 * static_cast<double>(i % 7);
  w.group("/perturb");
  w.attr("/perturb", "layer", 0LL);
  w.attr("/perturb", "tap", "k");
  w.attr("/perturb", "relative_size", 1e-3);
  w.numbers("/perturb/sensitivity", {L, kLayerTaps.size()}, sens);
  w.numbers("/perturb/head_sensitivity", {2}, {2.0, 3.0});
}

double read_cell(const std::filesystem::path& file, const std::string& dataset, std::size_t row, std::size_t col) {
  auto tree = results::read_h5_tree(file);
  const auto* v = tree.dataset(dataset);
  std::size_t cols = v->dims.size() == 2 ? v->dims[1] : 1;
  return v->numbers.at(row * cols + col);
}

void set_cell(const std::filesystem::path& file, const std::string& dataset, std::size_t row, std::size_t col,
              double value) {
  auto tree = results::read_h5_tree(file);
  const auto* v = tree.dataset(dataset);
  std::size_t cols = v->dims.size() == 2 ? v->dims[1] : 1;
  std::vector<double> values = v->numbers;
  values.at(row * cols + col) = value;
  H5Writer w(file, true);
  std::string name = dataset.substr(dataset.rfind('/') + 1);
  if (name == "present" || name == "gate") {
    w.int8s(dataset, v->dims, std::vector<int>(values.begin(), values.end()));
  } else {
    w.numbers(dataset, v->dims, values);
  }
}

void scale_op_time(const std::filesystem::path& file, const std::string& label, std::size_t layer,
                   std::size_t op, double factor) {
  for (const char* name : {"op_median_ms", "op_p10_ms", "op_p90_ms"}) {
    std::string ds = "/timing/" + label + "/" + name;
    set_cell(file, ds, layer, op, read_cell(file, ds, layer, op) * factor);
  }
}

void scale_all_op_times(const std::filesystem::path& file, double factor) {
  auto tree = results::read_h5_tree(file);
  H5Writer w(file, true);
  for (const auto& [label, group] : tree.group("timing")->groups) {
    for (const char* name : {"op_median_ms", "op_p10_ms", "op_p90_ms"}) {
      const auto& v = group.datasets.at(name);
      std::vector<double> values = v.numbers;
      for (double& x : values) x *= factor;
      w.numbers("/timing/" + label + "/" + name, v.dims, values);
    }
  }
}

void set_string_attr(const std::filesystem::path& file, const std::string& object, const std::string& name,
                     const std::string& value) {
  H5Writer w(file, true);
  w.attr(object, name, value);
}

void remove_object(const std::filesystem::path& file, const std::string& object) {
  results::silence_hdf5_errors();
  hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0) throw std::runtime_error(file.string() + ": cannot open for editing");
  const auto at = object.find('@');
  herr_t st = at == std::string::npos
                  ? H5Ldelete(f, object.c_str(), H5P_DEFAULT)
                  : H5Adelete_by_name(f, object.substr(0, at).c_str(), object.substr(at + 1).c_str(), H5P_DEFAULT);
  H5Fclose(f);
  if (st < 0) throw std::runtime_error(file.string() + ": cannot delete " + object);
}

}  // namespace fusecheck::test
