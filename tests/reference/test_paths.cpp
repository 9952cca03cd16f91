// The CPU paths (ref64-cpu, ref32-cpu, emulated-cpu) on in-memory random checkpoints:
// against a deliberately naive FP64 implementation written from the HF formulas, FP32
// against FP64 per tap, isolated against stacked layers, KV-cache decode against prefill,
// perturbation, and the emulated recipes' error bands and rounding points.
#include <cmath>
#include <map>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

#include "harness/core/error.h"
#include "harness/core/greedy.h"
#include "harness/core/path_registry.h"
#include "reference/decoder_path.h"
#include "reference/random_checkpoint.h"
#include "reference/register.h"
#include "tests/common/small_specs.h"

namespace fusecheck::ref {
namespace {

// Three layers of 6 query heads over 2 kv heads of 16; qwen3 brings q/k norms, theta 1e6
// and tied embeddings, qwen2 QKV biases, llama-gguf interleaved RoPE pairs.
ModelSpec small_spec(const std::string& arch) {
  ModelSpec s = test::random_checkpoint_spec(
      arch, 3, {.hidden = 48, .n_heads = 6, .n_kv_heads = 2, .head_dim = 16, .intermediate = 80});
  s.rope_theta = arch == "qwen3" ? 1e6 : 10000.0;
  s.has_qk_norm = arch == "qwen3";
  s.has_qkv_bias = arch == "qwen2";
  s.tied_embeddings = arch == "qwen3";
  s.rope_style = arch == "llama-gguf" ? RopeStyle::Interleaved : RopeStyle::NeoxHalfSplit;
  s.max_position = 512;
  return s;
}

double rel_l2(const TapMatrix& a, const TapMatrix& ref) {
  EXPECT_EQ(a.rows(), ref.rows());
  EXPECT_EQ(a.cols(), ref.cols());
  EXPECT_GT(ref.norm(), 0.0) << "reference is all zeros: the comparison would pass by accident";
  return (a - ref).norm() / ref.norm();
}

// ---------------------------------------------------------------------------------------
// Naive FP64 decoder layer, one sequence: plain loops over TensorView::at, HF semantics.
class NaiveModel {
 public:
  explicit NaiveModel(const Checkpoint& c) : c_(c), s_(c.spec()), keys_(s_.n_layers), values_(s_.n_layers) {}

  TapSet layer(int l, const TapMatrix& x) {
    const LayerTensors& t = c_.model().layers[l];
    const int n = static_cast<int>(x.rows()), H = s_.hidden, hd = s_.head_dim;
    const int past = static_cast<int>(keys_[l].size());
    TapSet out;
    TapMatrix an = norm(x, *t.attn_norm, H);
    TapMatrix q = linear(an, *t.wq, t.bq), k = linear(an, *t.wk, t.bk), v = linear(an, *t.wv, t.bv);
    out[Tap::attn_norm] = an;
    out[Tap::q] = q;
    out[Tap::k] = k;
    out[Tap::v] = v;
    if (s_.has_qk_norm) {
      q = norm(q, *t.q_norm, hd);
      k = norm(k, *t.k_norm, hd);
      out[Tap::q_normed] = q;
      out[Tap::k_normed] = k;
    }
    rope(q, past);
    rope(k, past);
    out[Tap::q_rope] = q;
    out[Tap::k_rope] = k;
    for (int r = 0; r < n; ++r) {
      keys_[l].push_back(k.row(r));
      values_[l].push_back(v.row(r));
    }
    TapMatrix attn(n, s_.q_width());
    const int group = s_.n_heads / s_.n_kv_heads;
    for (int r = 0; r < n; ++r) {
      for (int h = 0; h < s_.n_heads; ++h) {
        const int g = h / group;
        const int visible = past + r + 1;
        std::vector<double> p(visible);
        double mx = -1e300, sum = 0;
        for (int j = 0; j < visible; ++j) {
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += q(r, h * hd + d) * keys_[l][j](g * hd + d);
          p[j] = dot / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, p[j]);
        }
        for (auto& e : p) sum += (e = std::exp(e - mx));
        for (int d = 0; d < hd; ++d) {
          double acc = 0;
          for (int j = 0; j < visible; ++j) acc += p[j] / sum * values_[l][j](g * hd + d);
          attn(r, h * hd + d) = acc;
        }
      }
    }
    out[Tap::attn] = attn;
    TapMatrix o = linear(attn, *t.wo, nullptr);
    TapMatrix mid = x + o;
    TapMatrix mn = norm(mid, *t.mlp_norm, H);
    TapMatrix gate = linear(mn, *t.w_gate, nullptr), up = linear(mn, *t.w_up, nullptr);
    TapMatrix act(n, s_.intermediate);
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < s_.intermediate; ++j) {
        const double g = gate(i, j);
        act(i, j) = g / (1 + std::exp(-g)) * up(i, j);
      }
    }
    TapMatrix down = linear(act, *t.w_down, nullptr);
    out[Tap::o_proj] = o;
    out[Tap::resid_mid] = mid;
    out[Tap::mlp_norm] = mn;
    out[Tap::gate] = gate;
    out[Tap::up] = up;
    out[Tap::act] = act;
    out[Tap::down] = down;
    out[Tap::resid_out] = mid + down;
    return out;
  }

 private:
  TapMatrix norm(const TapMatrix& x, const TensorView& w, int group) const {
    TapMatrix y(x.rows(), x.cols());
    for (int r = 0; r < x.rows(); ++r) {
      for (int g0 = 0; g0 < x.cols(); g0 += group) {
        double ms = 0;
        for (int j = 0; j < group; ++j) ms += x(r, g0 + j) * x(r, g0 + j);
        const double inv = 1 / std::sqrt(ms / group + s_.rms_eps);
        for (int j = 0; j < group; ++j) y(r, g0 + j) = w.at(j) * (x(r, g0 + j) * inv);
      }
    }
    return y;
  }
  TapMatrix linear(const TapMatrix& x, const TensorView& w, const TensorView* b) const {
    const int out = static_cast<int>(w.rows()), in = static_cast<int>(w.cols());
    TapMatrix y(x.rows(), out);
    for (int r = 0; r < x.rows(); ++r) {
      for (int o = 0; o < out; ++o) {
        double acc = b ? b->at(o) : 0.0;
        for (int i = 0; i < in; ++i) acc += x(r, i) * w.at(static_cast<std::int64_t>(o) * in + i);
        y(r, o) = acc;
      }
    }
    return y;
  }
  void rope(TapMatrix& x, int past) const {
    const int hd = s_.head_dim, half = hd / 2;
    for (int r = 0; r < x.rows(); ++r) {
      for (int h = 0; h < x.cols() / hd; ++h) {
        for (int i = 0; i < half; ++i) {
          const double angle = (past + r) * std::pow(s_.rope_theta, -2.0 * i / hd);
          const bool neox = s_.rope_style == RopeStyle::NeoxHalfSplit;
          const int ia = h * hd + (neox ? i : 2 * i), ib = h * hd + (neox ? i + half : 2 * i + 1);
          const double a = x(r, ia), b = x(r, ib);
          x(r, ia) = a * std::cos(angle) - b * std::sin(angle);
          x(r, ib) = b * std::cos(angle) + a * std::sin(angle);
        }
      }
    }
  }

  const Checkpoint& c_;
  ModelSpec s_;
  std::vector<std::vector<Eigen::RowVectorXd>> keys_, values_;
};

class RefAgainstNaive : public ::testing::TestWithParam<std::string> {};

TEST_P(RefAgainstNaive, EveryTapMatchesToFp64RoundingOverPrefillAndDecode) {
  RandomCheckpoint ckpt(small_spec(GetParam()), 11);
  Ref64Path path(ckpt, "ref64-cpu");
  NaiveModel naive(ckpt);
  path.reset(1, 16);
  const std::vector<std::int32_t> prompt = {5, 17, 3, 88, 41}, next = {60};
  for (const auto& tokens : {prompt, next}) {
    TapMatrix h = path.embed(tokens), hn = h;
    for (int l = 0; l < ckpt.spec().n_layers; ++l) {
      const TapSet got = path.layer(l, h);
      const TapSet want = naive.layer(l, hn);
      ASSERT_EQ(got.size(), path.taps().size());
      for (const auto& [tap, values] : want) {
        // Sums of <= 80 products in a different order: ~1e-15 relative; 1e-12 leaves room.
        EXPECT_LT(rel_l2(got.at(tap), values), 1e-12) << "layer " << l << " tap " << tap_name(tap);
      }
      h = got.at(Tap::resid_out);
      hn = want.at(Tap::resid_out);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, RefAgainstNaive,
                         ::testing::Values("qwen3", "qwen2", "llama", "llama-gguf"));

// Runs every layer on `tokens` (one sequence), returning each layer's taps.
std::vector<TapSet> run_stack(Path& path, const std::vector<std::int32_t>& tokens, int n_layers) {
  std::vector<TapSet> out;
  TapMatrix h = path.embed(tokens);
  for (int l = 0; l < n_layers; ++l) {
    out.push_back(path.layer(l, h));
    h = out.back().at(Tap::resid_out);
  }
  return out;
}

const std::vector<std::int32_t> kTokens = {1, 9, 33, 70, 2, 95, 14};

TEST(Ref32, AgreesWithRef64AtFp32AccuracyOnEveryTap) {
  for (const std::string arch : {"qwen3", "qwen2", "llama"}) {
    RandomCheckpoint ckpt(small_spec(arch), 5);
    Ref64Path ref64(ckpt, "ref64-cpu");
    Ref32Path ref32(ckpt, "ref32-cpu");
    ref64.reset(1, 8);
    ref32.reset(1, 8);
    const auto a = run_stack(ref64, kTokens, 3), b = run_stack(ref32, kTokens, 3);
    for (int l = 0; l < 3; ++l) {
      for (Tap tap : ref32.taps()) {
        // FP32 rounding (6e-8) grown by sums of <= 80 terms and 3 layers: below 1e-5.
        const double e = rel_l2(b[l].at(tap), a[l].at(tap));
        EXPECT_LT(e, 1e-5) << arch << " layer " << l << " tap " << tap_name(tap);
        EXPECT_GT(e, 0.0) << "ref32 identical to ref64 means it did not run in float";
      }
    }
  }
}

TEST(Ref64, IsolatedLayerEqualsTheSameLayerInTheStack) {
  RandomCheckpoint ckpt(small_spec("qwen3"), 21);
  Ref64Path stacked(ckpt, "ref64-cpu"), isolated(ckpt, "ref64-cpu");
  stacked.reset(1, 8);
  isolated.reset(1, 8);
  const auto all = run_stack(stacked, kTokens, 3);
  // Layer 2 alone, from layer 1's output, with nothing run before it.
  const TapSet alone = isolated.layer(2, all[1].at(Tap::resid_out));
  for (Tap tap : isolated.taps()) EXPECT_EQ(alone.at(tap), all[2].at(tap)) << tap_name(tap);
}

TEST(Ref64, DecodingThroughTheKvCacheMatchesOnePrefill) {
  for (const std::string arch : {"qwen3", "llama-gguf"}) {
    RandomCheckpoint ckpt(small_spec(arch), 8);
    Ref64Path whole(ckpt, "ref64-cpu"), steps(ckpt, "ref64-cpu");
    whole.reset(1, 8);
    steps.reset(1, 8);
    const auto full = run_stack(whole, kTokens, 3);
    run_stack(steps, {kTokens.begin(), kTokens.begin() + 4}, 3);
    std::vector<TapSet> last;
    for (std::size_t t = 4; t < kTokens.size(); ++t) last = run_stack(steps, {kTokens[t]}, 3);
    const TapMatrix want = full[2].at(Tap::resid_out).bottomRows(1);
    EXPECT_LT(rel_l2(last[2].at(Tap::resid_out), want), 1e-13) << arch;
  }
}

TEST(Ref64, SequencesOfABatchAreIndependent) {
  RandomCheckpoint ckpt(small_spec("qwen2"), 3);
  Ref64Path batched(ckpt, "ref64-cpu"), single(ckpt, "ref64-cpu");
  batched.reset(2, 8);
  const std::vector<std::int32_t> a = {4, 8, 15}, b = {16, 23, 42};
  std::vector<std::int32_t> both = a;
  both.insert(both.end(), b.begin(), b.end());
  const auto got = run_stack(batched, both, 3);
  single.reset(1, 8);
  const auto want_b = run_stack(single, b, 3);
  EXPECT_LT(rel_l2(got[2].at(Tap::resid_out).bottomRows(3), want_b[2].at(Tap::resid_out)), 1e-13);
}

TEST(Ref64, KvCacheOverflowIsRefused) {
  RandomCheckpoint ckpt(small_spec("llama"), 3);
  Ref64Path path(ckpt, "ref64-cpu");
  path.reset(1, 4);
  const TapMatrix h = path.embed(std::vector<std::int32_t>{1, 2, 3});
  path.layer(0, h);
  EXPECT_THROW(path.layer(0, h), std::length_error);
}

TEST(Ref64, TokenOutsideTheVocabularyIsAnInputError) {
  RandomCheckpoint ckpt(small_spec("llama"), 3);
  Ref64Path path(ckpt, "ref64-cpu");
  EXPECT_THROW(path.embed(std::vector<std::int32_t>{97}), InputError);
}

TEST(Perturbation, AddsNoiseOfTheRequestedRelativeSizeAtThatTapOnly) {
  RandomCheckpoint ckpt(small_spec("qwen3"), 4);
  Ref64Path clean(ckpt, "ref64-cpu"), noisy(ckpt, "ref64-cpu");
  clean.reset(1, 8);
  noisy.reset(1, 8);
  noisy.set_perturbation(Perturbation{1, Tap::k_normed, 1e-3, 77});
  const auto a = run_stack(clean, kTokens, 3), b = run_stack(noisy, kTokens, 3);
  for (Tap tap : clean.taps()) EXPECT_EQ(a[0].at(tap), b[0].at(tap)) << "layer 0 must be untouched";
  EXPECT_EQ(a[1].at(Tap::k), b[1].at(Tap::k)) << "taps before the perturbed one are untouched";
  const TapMatrix& x = a[1].at(Tap::k_normed);
  const double rms = x.norm() / std::sqrt(static_cast<double>(x.size()));
  const double injected = (b[1].at(Tap::k_normed) - x).norm() / std::sqrt(static_cast<double>(x.size()));
  // 7 x 32 normal samples: their rms is within 15% of 1 with overwhelming probability.
  EXPECT_NEAR(injected / rms, 1e-3, 0.15e-3);
  EXPECT_NE(a[2].at(Tap::resid_out), b[2].at(Tap::resid_out)) << "the perturbation must propagate";
}

TEST(Perturbation, IsReproducibleFromItsSeed) {
  RandomCheckpoint ckpt(small_spec("llama"), 4);
  auto run = [&](std::uint64_t seed) {
    Ref64Path p(ckpt, "ref64-cpu");
    p.reset(1, 8);
    p.set_perturbation(Perturbation{0, Tap::attn, 1e-2, seed});
    return run_stack(p, kTokens, 3)[2].at(Tap::resid_out);
  };
  EXPECT_EQ(run(5), run(5));
  EXPECT_NE(run(5), run(6));
}

TEST(Perturbation, AtATapTheModelLacksIsAnInputError) {
  RandomCheckpoint ckpt(small_spec("llama"), 4);
  Ref64Path p(ckpt, "ref64-cpu");
  EXPECT_THROW(p.set_perturbation(Perturbation{0, Tap::q_normed, 1e-3, 1}), InputError);
}

TEST(Perturbation, IsRefusedByTheEmulatedPath) {
  RandomCheckpoint ckpt(small_spec("llama"), 4);
  EmulatedPath p(ckpt, "emulated-cpu", &find_recipe("hf-bf16"));
  EXPECT_THROW(p.set_perturbation(Perturbation{0, Tap::k, 1e-3, 1}), std::logic_error);
}

bool all_bf16(const TapMatrix& m) {
  for (Index i = 0; i < m.size(); ++i) {
    const float f = static_cast<float>(m.data()[i]);
    if (static_cast<double>(f) != m.data()[i] || round_to_bf16(f) != f) return false;
  }
  return true;
}

TEST(Emulated, RoundsExactlyAtTheRecipesPoints) {
  RandomCheckpoint ckpt(small_spec("qwen3"), 6, DType::BF16);
  EmulatedPath hf(ckpt, "emulated-cpu", &find_recipe("hf-bf16"));
  EmulatedPath fused(ckpt, "emulated-cpu", &find_recipe("fused-v1"));
  hf.reset(1, 8);
  fused.reset(1, 8);
  const auto a = run_stack(hf, kTokens, 3), b = run_stack(fused, kTokens, 3);
  for (Tap tap : hf.taps()) EXPECT_TRUE(all_bf16(a[1].at(tap))) << "hf-bf16 rounds " << tap_name(tap);
  for (Tap tap : {Tap::attn_norm, Tap::q, Tap::k, Tap::v, Tap::q_rope, Tap::k_rope, Tap::attn,
                  Tap::o_proj, Tap::resid_mid, Tap::mlp_norm, Tap::act, Tap::resid_out}) {
    EXPECT_TRUE(all_bf16(b[1].at(tap))) << "fused-v1 rounds " << tap_name(tap);
  }
  for (Tap tap : {Tap::q_normed, Tap::k_normed, Tap::gate, Tap::up, Tap::down}) {
    EXPECT_FALSE(all_bf16(b[1].at(tap))) << "fused-v1 keeps " << tap_name(tap) << " in FP32";
  }
}

// flashinfer-cuda returns every tap as a FlashInfer kernel or cuBLAS GEMM wrote it, in
// bf16; its twin must round each of them too (the q/k norms and gate|up included), and
// its logits are bf16 as the engines return them.
TEST(Emulated, FlashinferRecipeRoundsEveryTapAndTheLogits) {
  RandomCheckpoint ckpt(small_spec("qwen3"), 6, DType::BF16);
  EmulatedPath p(ckpt, "emulated-cpu", &find_recipe("flashinfer"));
  p.reset(1, 8);
  const auto taps = run_stack(p, kTokens, 3);
  for (const auto& [tap, m] : taps[1]) EXPECT_TRUE(all_bf16(m)) << "flashinfer rounds " << tap_name(tap);
  EXPECT_TRUE(all_bf16(p.head(taps[2].at(Tap::resid_out)).at(Tap::logits)));
}

TEST(Emulated, Bf16RecipesLandInTheExpectedErrorBandAgainstRef64) {
  RandomCheckpoint ckpt(small_spec("qwen3"), 6, DType::BF16);
  Ref64Path ref(ckpt, "ref64-cpu");
  ref.reset(1, 8);
  const auto want = run_stack(ref, kTokens, 3);
  std::map<std::string, double> err;
  for (const std::string name : {"hf-bf16", "fused-v1", "hf-fp16"}) {
    EmulatedPath p(ckpt, "emulated-cpu", &find_recipe(name));
    p.reset(1, 8);
    err[name] = rel_l2(run_stack(p, kTokens, 3)[2].at(Tap::resid_out), want[2].at(Tap::resid_out));
  }
  // bf16 keeps 8 significant bits (2^-9 = 2e-3 relative per rounding); a few dozen
  // roundings per layer over 3 layers land between 1e-4 and 3e-2.
  EXPECT_GT(err["hf-bf16"], 1e-4);
  EXPECT_LT(err["hf-bf16"], 3e-2);
  EXPECT_GT(err["fused-v1"], 1e-4);
  EXPECT_LT(err["fused-v1"], err["hf-bf16"]) << "fewer roundings must not be worse";
  // fp16 has 11 bits: about 8x closer than bf16, with no overflow at these magnitudes.
  EXPECT_LT(err["hf-fp16"], err["hf-bf16"] / 3);
}

TEST(Emulated, ReportsHeadroomAndCountsFp16Overflow) {
  // k_norm weights scaled by 30000 push k_normed (and the scores) beyond fp16's 65504.
  RandomCheckpoint ckpt(small_spec("qwen3"), 6, DType::F32, 30000.0);
  EmulatedPath p(ckpt, "emulated-cpu", &find_recipe("hf-fp16"));
  p.reset(1, 8);
  p.head(run_stack(p, kTokens, 3)[2].at(Tap::resid_out));
  const auto h = p.headroom(0);
  ASSERT_TRUE(h.count("k_normed"));
  EXPECT_TRUE(h.at("k_normed").rounded);
  EXPECT_GT(h.at("k_normed").ratio(), 1.0);
  EXPECT_GT(h.at("k_normed").n_overflow, 0);
  EXPECT_GT(h.at("attn_norm.sumsq").n_values, 0);
  EXPECT_FALSE(h.at("attn_norm.sumsq").rounded);
  EXPECT_EQ(h.at("attn_norm").n_overflow, 0);
  EXPECT_GT(p.headroom(3).at("logits").n_values, 0) << "slot n_layers is the head";
}

TEST(Registry, RegistersTheThreeCpuPathsAndPicksTheRecipe) {
  register_cpu_paths();
  RandomCheckpoint ckpt(small_spec("llama"), 2);
  for (const std::string name : {"ref64-cpu", "ref32-cpu", "emulated-cpu"}) {
    auto p = make_path(name, ckpt, {});
    EXPECT_EQ(p->name(), name);
    EXPECT_EQ(p->device(), "cpu");
  }
  PathOptions o;
  o.recipe = "fused-v1";
  auto p = make_path("emulated-cpu", ckpt, o);
  EXPECT_EQ(dynamic_cast<EmulatedPath&>(*p).recipe()->name, "fused-v1");
  EXPECT_EQ(dynamic_cast<EmulatedPath&>(*make_path("emulated-cpu", ckpt, {})).recipe()->name, "hf-bf16");
  o.recipe = "bf17";
  EXPECT_THROW(make_path("emulated-cpu", ckpt, o), InputError);
}

TEST(Greedy, DecodingStepByStepMatchesArgmaxOfFullPrefills) {
  RandomCheckpoint ckpt(small_spec("qwen3"), 13);
  Ref64Path path(ckpt, "ref64-cpu");
  const std::vector<std::int32_t> prompt = {3, 1, 4};
  const GreedyResult r = greedy_decode(path, 3, prompt, 4);
  ASSERT_EQ(r.ids.size(), 4u);
  // Recompute each token by a fresh prefill of everything so far (no cache reuse).
  std::vector<std::int32_t> seq = prompt;
  for (std::size_t i = 0; i < r.ids.size(); ++i) {
    Ref64Path fresh(ckpt, "ref64-cpu");
    fresh.reset(1, 16);
    const TapMatrix last = run_stack(fresh, seq, 3)[2].at(Tap::resid_out).bottomRows(1);
    EXPECT_EQ(argmax_row(fresh.head(last).at(Tap::logits), 0).token, r.ids[i]) << "step " << i;
    EXPECT_GT(r.steps[i].margin, 0.0);
    seq.push_back(r.ids[i]);
  }
}

TEST(Greedy, ArgmaxSkipsNanAndGivesNoTokenWhenEveryLogitIsNan) {
  TapMatrix logits(1, 4);
  logits << std::nan(""), 2.0, 5.0, std::nan("");
  EXPECT_EQ(argmax_row(logits, 0).token, 2);
  EXPECT_DOUBLE_EQ(argmax_row(logits, 0).margin, 3.0);
  logits.setConstant(std::nan(""));
  EXPECT_EQ(argmax_row(logits, 0).token, kNoToken);
}

// A path that has diverged to NaN logits: greedy decoding records it and stops instead
// of aborting the run that asked for it.
class NanLogitsPath : public Path {
 public:
  explicit NanLogitsPath(const Checkpoint& ckpt) : inner_(ckpt, "ref64-cpu") {}
  std::string name() const override { return "nan-logits"; }
  std::string device() const override { return "cpu"; }
  std::vector<Tap> taps() const override { return inner_.taps(); }
  void reset(int batch, int capacity) override { inner_.reset(batch, capacity); }
  TapMatrix embed(std::span<const std::int32_t> tokens) override { return inner_.embed(tokens); }
  TapSet layer(int l, const TapMatrix& input) override { return inner_.layer(l, input); }
  TapSet head(const TapMatrix& hidden) override {
    TapSet taps = inner_.head(hidden);
    taps.at(Tap::logits).setConstant(std::nan(""));
    return taps;
  }

 private:
  Ref64Path inner_;
};

TEST(Greedy, StopsAtTheFirstStepWhoseLogitsAreAllNan) {
  RandomCheckpoint ckpt(small_spec("qwen3"), 13);
  NanLogitsPath path(ckpt);
  const std::vector<std::int32_t> prompt = {3, 1, 4};
  const GreedyResult r = greedy_decode(path, 3, prompt, 4);
  ASSERT_EQ(r.ids.size(), 1u);
  EXPECT_EQ(r.ids[0], kNoToken);
}

}  // namespace
}  // namespace fusecheck::ref
