// advise: measure each candidate recipe per layer, propose by the additive KL model, prove
// by running the proposed mix (reference/advise.h).
#include "reference/advise.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <fmt/core.h>

#include "harness/core/error.h"
#include "harness/core/recipe_mix.h"
#include "reference/decoder_path.h"

namespace fusecheck::ref {

namespace {

// Logits rows of the prompt and of each fed token, and the wall time of every layer.
struct Forward {
  TapMatrix logits;
  std::vector<double> layer_ms;
};

// Prefill `prompt`, then one decode step per token of `fed` (teacher forcing).
Forward run_path(Path& path, const ModelSpec& spec, std::span<const std::int32_t> prompt,
                 std::span<const std::int32_t> fed) {
  path.reset(1, static_cast<int>(prompt.size() + fed.size()) + 1);
  Forward out;
  out.layer_ms.assign(static_cast<std::size_t>(spec.n_layers), 0.0);
  std::vector<TapMatrix> parts;
  auto forward = [&](std::span<const std::int32_t> ids) {
    TapMatrix h = path.embed(ids);
    for (int l = 0; l < spec.n_layers; ++l) {
      const auto t0 = std::chrono::steady_clock::now();
      h = path.layer(l, h).at(Tap::resid_out);
      out.layer_ms[static_cast<std::size_t>(l)] +=
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
    parts.push_back(path.head(h).at(Tap::logits));
  };
  forward(prompt);
  for (std::size_t s = 0; s < fed.size(); ++s) forward(fed.subspan(s, 1));
  Eigen::Index rows = 0;
  for (const auto& p : parts) rows += p.rows();
  out.logits.resize(rows, parts.front().cols());
  Eigen::Index at = 0;
  for (const auto& p : parts) {
    out.logits.middleRows(at, p.rows()) = p;
    at += p.rows();
  }
  return out;
}

std::vector<double> log_softmax(const TapMatrix& logits, Eigen::Index row) {
  const double mx = logits.row(row).maxCoeff();
  double sum = 0;
  for (Eigen::Index j = 0; j < logits.cols(); ++j) sum += std::exp(logits(row, j) - mx);
  const double lse = mx + std::log(sum);
  std::vector<double> out(static_cast<std::size_t>(logits.cols()));
  for (Eigen::Index j = 0; j < logits.cols(); ++j) out[static_cast<std::size_t>(j)] = logits(row, j) - lse;
  return out;
}

class Advisor {
 public:
  Advisor(const Checkpoint& ckpt, std::span<const std::int32_t> prompt, const AdviseOptions& o)
      : ckpt_(ckpt), spec_(ckpt.spec()), prompt_(prompt.begin(), prompt.end()), o_(o) {
    // ref32-cpu's greedy continuation: decode_steps tokens fed, one more decided.
    Ref32Path ref(ckpt, "ref32-cpu");
    std::vector<std::int32_t> tokens = prompt_;
    ref.reset(1, static_cast<int>(prompt_.size()) + o.decode_steps + 2);
    TapMatrix h;
    auto step = [&](std::span<const std::int32_t> ids) {
      h = ref.embed(ids);
      for (int l = 0; l < spec_.n_layers; ++l) h = ref.layer(l, h).at(Tap::resid_out);
      const TapMatrix logits = ref.head(h).at(Tap::logits);
      Eigen::Index next = 0;
      logits.row(logits.rows() - 1).maxCoeff(&next);
      greedy_.push_back(static_cast<std::int32_t>(next));
    };
    step(prompt_);
    for (int s = 0; s < o.decode_steps; ++s) step(std::span(greedy_).subspan(static_cast<std::size_t>(s), 1));
    fed_.assign(greedy_.begin(), greedy_.begin() + o.decode_steps);
    ref_logits_ = run_path(ref, spec_, prompt_, fed_).logits;
  }

  MixMeasurement measure(const std::string& mix_text) {
    const RecipeMix mix = parse_recipe_mix(mix_text);
    EmulatedPath path(ckpt_, "emulated-cpu", recipes_per_slot(mix, spec_.n_layers));
    const Forward f = run_path(path, spec_, prompt_, fed_);
    MixMeasurement m;
    m.mix = mix.text();
    m.layer_ms = f.layer_ms;
    const Eigen::Index rows = f.logits.rows();
    Eigen::Index top1 = 0;
    double kl_sum = 0;
    bool greedy_alive = true;
    for (Eigen::Index r = 0; r < rows; ++r) {
      const auto p = log_softmax(ref_logits_, r);
      const auto q = log_softmax(f.logits, r);
      double kl = 0;
      for (std::size_t j = 0; j < p.size(); ++j) kl += std::exp(p[j]) * (p[j] - q[j]);
      kl = std::max(kl, 0.0);  // rounding of the FP64 sum can leave -1e-17
      kl_sum += kl;
      m.kl_max = std::max(m.kl_max, kl);
      Eigen::Index a = 0, b = 0;
      ref_logits_.row(r).maxCoeff(&a);
      f.logits.row(r).maxCoeff(&b);
      if (a == b) ++top1;
      // Greedy decisions are the last prompt row and every decode row; until the first miss
      // the mix's own greedy run feeds the same tokens, so teacher forcing is that run.
      const Eigen::Index decision = r - static_cast<Eigen::Index>(prompt_.size()) + 1;
      if (decision >= 0 && greedy_alive) {
        if (b == greedy_[static_cast<std::size_t>(decision)]) {
          ++m.greedy_match;
        } else {
          greedy_alive = false;
        }
      }
    }
    m.kl_mean = kl_sum / static_cast<double>(rows);
    m.top1 = static_cast<double>(top1) / static_cast<double>(rows);
    for (int l = 0; l < spec_.n_layers; ++l) m.decode_bytes += modeled_decode_bytes(spec_, mix.at(l), o_.kv_len);
    return m;
  }

  int greedy_decisions() const { return static_cast<int>(greedy_.size()); }

 private:
  const Checkpoint& ckpt_;
  ModelSpec spec_;
  std::vector<std::int32_t> prompt_, greedy_, fed_;
  AdviseOptions o_;
  TapMatrix ref_logits_;
};

std::string mix_of(const std::string& base, const std::vector<LayerChoice>& picks) {
  std::string text = base;
  for (const auto& p : picks) text += fmt::format("+{}@{}", p.recipe, p.layer);
  return parse_recipe_mix(text).text();
}

}  // namespace

double modeled_decode_bytes(const ModelSpec& spec, const std::string& recipe_name, int kv_len) {
  const Recipe& r = find_recipe(recipe_name);
  const double params = static_cast<double>(spec.hidden) * (spec.q_width() + 2.0 * spec.kv_width()) +
                        static_cast<double>(spec.q_width()) * spec.hidden +
                        3.0 * static_cast<double>(spec.hidden) * spec.intermediate;
  const double weight_bytes = params * (r.gemm_fp8 ? 1.0 : dtype_size(r.format));
  const double kv_bytes = 2.0 * kv_len * spec.kv_width() * (r.kv_fp8 ? 1.0 : dtype_size(r.format));
  return weight_bytes + kv_bytes;
}

AdviseResult advise(const Checkpoint& ckpt, std::span<const std::int32_t> prompt, const AdviseOptions& o) {
  if (!(o.target_kl > 0) || !std::isfinite(o.target_kl)) {
    throw InputError("", fmt::format("advise: --target-kl must be a positive finite number, got {}", o.target_kl));
  }
  if (prompt.empty()) throw InputError("", "advise: empty prompt");
  if (o.decode_steps < 0 || o.kv_len < 1 || o.max_proof_runs < 1) throw InputError("", "advise: bad option values");
  find_recipe(o.base);
  for (const auto& c : o.candidates) find_recipe(c);
  const ModelSpec& spec = ckpt.spec();
  AdviseResult out;
  out.options = o;
  Advisor advisor(ckpt, prompt, o);
  out.base = advisor.measure(o.base);

  // Each candidate in each layer alone.
  for (const auto& c : o.candidates) {
    for (int l = 0; l < spec.n_layers; ++l) {
      const double saved = modeled_decode_bytes(spec, o.base, o.kv_len) - modeled_decode_bytes(spec, c, o.kv_len);
      const MixMeasurement m = advisor.measure(mix_of(o.base, {{.layer = l, .recipe = c}}));
      out.measured.push_back({l, c, m.kl_mean - out.base.kl_mean, saved, m.layer_ms[static_cast<std::size_t>(l)]});
    }
  }

  // Greedy by bytes saved per unit of KL added (an increase below 0 is noise: counted 0).
  std::vector<LayerChoice> order;
  for (const auto& m : out.measured) {
    if (m.bytes_saved > 0) order.push_back(m);
  }
  auto cost = [](const LayerChoice& c) { return std::max(c.kl_increase, 0.0); };
  std::stable_sort(order.begin(), order.end(), [&](const LayerChoice& a, const LayerChoice& b) {
    return a.bytes_saved * std::max(cost(b), 1e-300) > b.bytes_saved * std::max(cost(a), 1e-300);
  });
  std::vector<LayerChoice> picks;
  double predicted = out.base.kl_mean;
  // A layer already switched is upgraded when a later candidate saves more and still fits.
  for (const auto& c : order) {
    const auto same = std::find_if(picks.begin(), picks.end(), [&](const LayerChoice& p) { return p.layer == c.layer; });
    const double freed = same == picks.end() ? 0.0 : cost(*same);
    if (same != picks.end() && same->bytes_saved >= c.bytes_saved) continue;
    if (predicted - freed + cost(c) > o.target_kl) continue;
    predicted += cost(c) - freed;
    if (same != picks.end()) picks.erase(same);
    picks.push_back(c);
  }

  // Proof: run the proposal; while it misses the target, drop the last pick and run again.
  for (int run = 0; run < o.max_proof_runs && !picks.empty(); ++run) {
    out.proof_runs.push_back(advisor.measure(mix_of(o.base, picks)));
    out.proposed = out.proof_runs.back().mix;
    out.predicted_kl = predicted;
    if (out.proof_runs.back().kl_mean <= o.target_kl) {
      out.met = true;
      return out;
    }
    predicted -= cost(picks.back());
    picks.pop_back();
  }
  // Nothing switched (or no switched mix proved out): the base alone, already measured.
  out.proof_runs.push_back(out.base);
  out.proposed = out.base.mix;
  out.predicted_kl = out.base.kl_mean;
  out.met = out.base.kl_mean <= o.target_kl;
  return out;
}

}  // namespace fusecheck::ref
