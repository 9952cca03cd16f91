// `fusecheck advise MODEL --target-kl K [--base R] [--recipes a,b] [--prefill N --steps S
// --seed K --kv-len L] [--out FILE.json]`: the cheapest per-layer recipe mix whose measured
// KL against ref32-cpu stays under K (reference/advise.h, docs/advise.md), with the
// measurements behind it and the proof run, printed and written as a JSON results file.
// Exit 0 when a mix meets K, 1 when none does (the base recipe alone misses it).
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "harness/cli/command.h"
#include "harness/core/checkpoint.h"
#include "harness/core/error.h"
#include "harness/core/version.h"
#include "reference/advise.h"

namespace fusecheck::cli {

namespace {

struct AdviseCli {
  std::string model;
  double target_kl = 0;
  std::string base = "fused-v1";
  std::vector<std::string> recipes = {"fp8-kv", "fp8-w8a8"};
  int prefill = 16;
  int steps = 16;
  int kv_len = 1024;
  std::uint64_t seed = 7;
  std::string out;
};

nlohmann::json to_json(const ref::MixMeasurement& m) {
  return {{"mix", m.mix},           {"kl_mean", m.kl_mean},  {"kl_max", m.kl_max},
          {"top1", m.top1},         {"greedy_match", m.greedy_match}, {"layer_ms", m.layer_ms},
          {"decode_bytes", m.decode_bytes}};
}

void print_run(const char* what, const ref::MixMeasurement& m, int decisions) {
  fmt::print("{:<8} {}\n         KL mean {:.3e} (max {:.3e}), top-1 {:.1f}%, greedy {} of {} decisions match, "
             "modeled decode bytes {:.4g}\n",
             what, m.mix, m.kl_mean, m.kl_max, 100 * m.top1, m.greedy_match, decisions, m.decode_bytes);
}

int run(const AdviseCli& o) {
  const auto ck = Checkpoint::open(o.model);
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<std::int32_t> id(0, ck->spec().vocab - 1);
  std::vector<std::int32_t> prompt(static_cast<std::size_t>(o.prefill));
  for (auto& t : prompt) t = id(rng);
  ref::AdviseOptions ao;
  ao.base = o.base;
  ao.candidates = o.recipes;
  ao.target_kl = o.target_kl;
  ao.decode_steps = o.steps;
  ao.kv_len = o.kv_len;
  const ref::AdviseResult r = ref::advise(*ck, prompt, ao);
  const int decisions = o.steps + 1;

  fmt::print("advise: {} on emulated-cpu against ref32-cpu, target KL {:.3e}; prompt {} seeded tokens (seed {}) + {} "
             "teacher-forced steps of ref32-cpu's greedy output\n",
             o.model, o.target_kl, o.prefill, o.seed, o.steps);
  fmt::print("model: a mix's KL = the base's + the sum of its layers' measured increases (additive), then checked by "
             "running the mix; time = modeled decode bytes at KV {} (weights + K/V cache; emulated-cpu ms shown for "
             "the record)\n",
             o.kv_len);
  print_run("base", r.base, decisions);
  fmt::print("{:>5} {:<24} {:>12} {:>14} {:>10}\n", "layer", "recipe", "KL increase", "bytes saved", "cpu ms");
  for (const auto& m : r.measured) {
    fmt::print("{:>5} {:<24} {:>12.3e} {:>14.4g} {:>10.2f}\n", m.layer, m.recipe, m.kl_increase, m.bytes_saved,
               m.layer_ms);
  }
  for (std::size_t i = 0; i < r.proof_runs.size(); ++i) {
    print_run(i + 1 == r.proof_runs.size() ? "proof" : "tried", r.proof_runs[i], decisions);
  }
  const auto& proof = r.proof_runs.back();
  fmt::print("time per layer (emulated-cpu ms):");
  for (double ms : proof.layer_ms) fmt::print(" {:.2f}", ms);
  fmt::print("\n");
  if (r.met) {
    fmt::print("PROPOSED: {} (measured KL {:.3e} <= {:.3e}; predicted {:.3e}; decode bytes {:.1f}% of the base's)\n",
               r.proposed, proof.kl_mean, o.target_kl, r.predicted_kl, 100 * proof.decode_bytes / r.base.decode_bytes);
  } else {
    fmt::print("NO MIX MEETS KL {:.3e}: the base {} alone measures {:.3e}\n", o.target_kl, o.base, r.base.kl_mean);
  }

  if (!o.out.empty()) {
    nlohmann::json j;
    j["format"] = "fusecheck-advise";
    j["format_version"] = 1;
    j["fusecheck_version"] = version_string();
    j["git_sha"] = git_sha();
    j["base_recipe"] = o.base;
    j["candidates"] = o.recipes;
    j["model"] = o.model;
    j["reference"] = "ref32-cpu";
    j["path"] = "emulated-cpu";
    j["seed"] = o.seed;
    j["prefill"] = o.prefill;
    j["decode_steps"] = o.steps;
    j["kv_len"] = o.kv_len;
    j["target_kl"] = o.target_kl;
    j["base"] = to_json(r.base);
    for (const auto& m : r.measured) {
      j["measured"].push_back({{"layer", m.layer}, {"recipe", m.recipe}, {"kl_increase", m.kl_increase},
                               {"bytes_saved", m.bytes_saved}, {"layer_ms", m.layer_ms}});
    }
    for (const auto& p : r.proof_runs) j["proof_runs"].push_back(to_json(p));
    j["proposed"] = r.proposed;
    j["predicted_kl"] = r.predicted_kl;
    j["met"] = r.met;
    std::ofstream f(o.out);
    f << j.dump(1) << "\n";
    if (!f) throw InputError(o.out, "cannot write the advise results");
    fmt::print("results: {}\n", o.out);
  }
  return r.met ? 0 : 1;
}

const CommandRegistrar registrar({
    "advise",
    "Cheapest per-layer recipe mix whose measured KL stays under --target-kl, proven by a run (docs/advise.md)",
    [](CLI::App& sub) -> std::function<int()> {
      auto o = std::make_shared<AdviseCli>();
      sub.add_option("MODEL", o->model, "HF checkpoint directory or .gguf file")->required();
      sub.add_option("--target-kl", o->target_kl, "largest mean next-token KL against ref32-cpu (nats)")
          ->required()
          ->check(CLI::PositiveNumber);
      sub.add_option("--base", o->base, "recipe of every layer not switched (default fused-v1)");
      sub.add_option("--recipes", o->recipes, "candidate recipes per layer (default fp8-kv,fp8-w8a8)")->delimiter(',');
      sub.add_option("--prefill", o->prefill, "seeded prompt tokens")->check(CLI::Range(1, 4096));
      sub.add_option("--steps", o->steps, "teacher-forced decode steps (ref32-cpu's greedy tokens)")
          ->check(CLI::Range(0, 4096));
      sub.add_option("--kv-len", o->kv_len, "context of the modeled decode step")->check(CLI::Range(1, 1 << 20));
      sub.add_option("--seed", o->seed, "seed of the prompt tokens");
      sub.add_option("--out", o->out, "JSON results file (format fusecheck-advise)");
      return [o]() { return run(*o); };
    },
});

}  // namespace

}  // namespace fusecheck::cli
