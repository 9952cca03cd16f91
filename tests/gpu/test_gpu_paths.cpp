// ref32-cuda and standard-cuda as whole paths, on the synthetic qwen3-tiny and llama-tiny
// checkpoints and the real stories260K.gguf: every tap of ref32-cuda against ref64-cpu at
// FP32 accuracy (and TF32 caught by the same tolerance), standard-cuda against emulated-cpu
// hf-bf16 up to accumulation order, the stories260K greedy oracle, poisoned taps fully
// written, and per-op timing. Comparisons run in isolated mode (every layer of both paths
// gets the reference's input), with a batch of two sequences, a prefill and decode steps.
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <random>

#include "harness/core/checkpoint.h"
#include "harness/core/error.h"
#include "harness/core/greedy.h"
#include "harness/core/path_registry.h"
#include "kernels/ref32/ref32_path.h"
#include "kernels/standard/standard_path.h"
#include "tests/common/ci_models.h"
#include "tests/common/test_support.h"
#include "tests/gpu/gpu_test_util.h"

namespace fusecheck::gpu_test {
namespace {

using test::ci_models;
using test::Model;
using test::synth_model;

double rel_l2(const TapMatrix& got, const TapMatrix& want) {
  EXPECT_EQ(got.rows(), want.rows());
  EXPECT_EQ(got.cols(), want.cols());
  EXPECT_GT(want.norm(), 0.0) << "reference is all zeros: the comparison would pass by accident";
  if (!got.allFinite()) return INFINITY;  // NaN (an unwritten, poisoned element) never passes
  return (got - want).norm() / want.norm();
}

// Share of elements that are bit-identical (as doubles: a bf16 value converts exactly).
double share_equal(const TapMatrix& got, const TapMatrix& want) {
  const Eigen::Index n = want.size();
  Eigen::Index same = 0;
  for (Eigen::Index i = 0; i < n; ++i) same += got.data()[i] == want.data()[i];
  return n ? static_cast<double>(same) / n : 1.0;
}

struct TapStats {
  double max_rel_l2 = 0;
  double min_share_equal = 1;
};
using Comparison = std::map<Tap, TapStats>;

// Drives `ref` and `test` through a prefill of `prefill` tokens and `decode` single-token
// steps for `batch` sequences, each layer fed the reference's input, the head fed the
// reference's last hidden state. Returns per tap the worst relative L2 over layers/steps.
Comparison compare_isolated(Path& ref, Path& test, const Checkpoint& c, int batch = 2,
                            int prefill = 6, int decode = 3) {
  const ModelSpec& s = c.spec();
  std::mt19937_64 rng(1234);
  std::uniform_int_distribution<int> tok(0, s.vocab - 1);
  ref.reset(batch, prefill + decode);
  test.reset(batch, prefill + decode);
  Comparison out;
  // Taps both sides have (the head's taps come from head(), not from taps()).
  auto record = [&](const TapSet& want, const TapSet& got) {
    for (const auto& [t, g] : got) {
      auto w = want.find(t);
      if (w == want.end()) continue;
      TapStats& st = out[t];
      st.max_rel_l2 = std::max(st.max_rel_l2, rel_l2(g, w->second));
      st.min_share_equal = std::min(st.min_share_equal, share_equal(g, w->second));
    }
  };
  for (int step = 0; step <= decode; ++step) {
    const int n = step == 0 ? prefill : 1;
    std::vector<std::int32_t> ids(static_cast<std::size_t>(batch * n));
    for (auto& id : ids) id = tok(rng);
    TapMatrix h = ref.embed(ids);
    for (int l = 0; l < s.n_layers; ++l) {
      const TapSet want = ref.layer(l, h);
      record(want, test.layer(l, h));
      h = want.at(Tap::resid_out);
    }
    record(ref.head(h), test.head(h));
  }
  return out;
}

void print(const std::string& title, const Comparison& cmp) {
  std::cout << title << "\n";
  for (const auto& [tap, st] : cmp) {
    std::cout << "  " << std::setw(11) << tap_name(tap) << "  rel_l2 " << std::scientific
              << std::setprecision(2) << st.max_rel_l2 << "  equal " << std::fixed << std::setprecision(4)
              << st.min_share_equal << "\n";
  }
  std::cout << std::defaultfloat;
}

class GpuPaths : public ::testing::Test {
 protected:
  void SetUp() override {
    FUSECHECK_REQUIRE_GPU();
    register_builtin_paths();
  }
};

TEST_F(GpuPaths, BothCudaPathsAreRegisteredAndExposeEveryTap) {
  auto ckpt = synth_model("qwen3-tiny");
  for (const std::string name : {"ref32-cuda", "standard-cuda"}) {
    auto p = make_path(name, *ckpt, {});
    EXPECT_EQ(p->name(), name);
    EXPECT_NE(p->device(), "cpu");
    EXPECT_EQ(p->taps().size(), kLayerTaps.size() + kHeadTaps.size()) << name << " on a Qwen3 model";
  }
  auto llama = synth_model("llama-tiny");
  EXPECT_EQ(make_path("ref32-cuda", *llama, {})->taps().size(), kLayerTaps.size() - 2 + kHeadTaps.size())
      << "no q_normed/k_normed without q/k norms";
}

TEST_F(GpuPaths, Ref32CudaAgreesWithRef64AtFp32AccuracyOnEveryTap) {
  for (const Model& m : ci_models()) {
    auto ref = make_path("ref64-cpu", *m.ckpt, {});
    auto gpu = make_ref32_cuda_path(*m.ckpt, {}, {.allow_tf32 = false, .poison_activations = true});
    const Comparison cmp = compare_isolated(*ref, *gpu, *m.ckpt);
    print("ref32-cuda vs ref64-cpu, " + m.label + " (isolated, batch 2, prefill 6 + 3 decode steps):", cmp);
    EXPECT_EQ(cmp.size(), gpu->taps().size());
    for (const auto& [tap, st] : cmp) {
      // FP32 rounding (6e-8 relative) grown by sums of <= 256 terms: far below 1e-5.
      EXPECT_LT(st.max_rel_l2, 1e-5) << m.label << " tap " << tap_name(tap);
    }
  }
}

TEST_F(GpuPaths, Tf32GemmsFailTheFp32Tolerance) {
  auto ckpt = synth_model("qwen3-tiny");
  auto ref = make_path("ref64-cpu", *ckpt, {});
  auto tf32 = make_ref32_cuda_path(*ckpt, {}, {.allow_tf32 = true, .poison_activations = true});
  const Comparison cmp = compare_isolated(*ref, *tf32, *ckpt);
  print("ref32-cuda with TF32 GEMMs vs ref64-cpu, qwen3-tiny:", cmp);
  // TF32 keeps 10 mantissa bits (2^-11 relative per operand): GEMM outputs land near 1e-4
  // to 1e-3, two orders above the FP32 tolerance, so the check tells TF32 from FP32.
  EXPECT_GT(cmp.at(Tap::q).max_rel_l2, 1e-5);
  EXPECT_GT(cmp.at(Tap::logits).max_rel_l2, 1e-5);
}

TEST_F(GpuPaths, Ref32CudaGreedyDecodingReproducesTheStories260KOracle) {
  auto dir = test::models_dir();
  if (!dir || !std::filesystem::exists(*dir / "stories260K.greedy.ids")) GTEST_SKIP() << test::models_dir_skip_reason();
  auto ckpt = Checkpoint::open(*dir / "stories260K.gguf");
  std::ifstream in(*dir / "stories260K.greedy.ids");
  std::vector<std::int32_t> want;
  for (std::int32_t id; in >> id;) want.push_back(id);
  ASSERT_EQ(want.size(), 256u);
  auto path = make_path("ref32-cuda", *ckpt, {});
  const std::vector<std::int32_t> prompt = {1};
  const GreedyResult r = greedy_decode(*path, ckpt->spec().n_layers, prompt, 256);
  ASSERT_EQ(r.ids.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(r.ids[i], want[i]) << "first mismatch at step " << i << " (margin " << r.steps[i].margin << ")";
  }
  std::cout << "ref32-cuda: " << ckpt->decode(r.ids).substr(0, 80) << "...\n";
  // The device route (the run's greedy phase on cuda): hidden states stay on the GPU.
  auto on_device = make_path("ref32-cuda", *ckpt, {});
  ASSERT_TRUE(on_device->capabilities().device_taps);
  const GreedyResult d = greedy_decode_on_device(*on_device, ckpt->spec().n_layers, prompt, 256);
  ASSERT_EQ(d.ids.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(d.ids[i], want[i]) << "device route: first mismatch at step " << i;
    EXPECT_EQ(d.steps[i].margin, r.steps[i].margin) << "step " << i;
  }
}

TEST_F(GpuPaths, StandardCudaMatchesEmulatedHfBf16UpToAccumulationOrder) {
  for (const Model& m : ci_models()) {
    auto emulated = make_path("emulated-cpu", *m.ckpt, {.recipe = "hf-bf16"});
    auto gpu = make_standard_cuda_path(*m.ckpt, {}, {.poison_activations = true});
    const Comparison cmp = compare_isolated(*emulated, *gpu, *m.ckpt);
    print("standard-cuda vs emulated-cpu hf-bf16, " + m.label + " (isolated):", cmp);
    auto ref64 = make_path("ref64-cpu", *m.ckpt, {});
    auto emulated2 = make_path("emulated-cpu", *m.ckpt, {.recipe = "hf-bf16"});
    const Comparison recipe = compare_isolated(*ref64, *emulated2, *m.ckpt);
    print("  for scale, emulated-cpu hf-bf16 vs ref64-cpu, " + m.label + ":", recipe);
    EXPECT_EQ(cmp.size(), gpu->taps().size());
    for (const auto& [tap, st] : cmp) {
      // Same roundings, different FP32 summation order: an occasional element rounds the
      // other way (one bf16 ulp, 2^-8 relative), so the tap's relative L2 stays well below
      // one ulp and far below the recipe's own distance to FP64.
      EXPECT_LT(st.max_rel_l2, 4e-3) << m.label << " tap " << tap_name(tap);
      EXPECT_LT(st.max_rel_l2, 0.5 * recipe.at(tap).max_rel_l2 + 1e-6) << m.label << " tap " << tap_name(tap);
    }
  }
}

TEST_F(GpuPaths, PoisonedTapsAreFullyWritten) {
  auto ckpt = synth_model("qwen3-tiny");
  for (bool standard : {false, true}) {
    auto p = standard ? make_standard_cuda_path(*ckpt, {}, {.poison_activations = true})
                      : make_ref32_cuda_path(*ckpt, {}, {.poison_activations = true});
    p->reset(3, 9);
    const std::vector<std::int32_t> ids = {5, 17, 29, 41, 53, 65, 77, 89, 101};  // 3 x 3
    TapMatrix h = p->embed(ids);
    for (int l = 0; l < ckpt->spec().n_layers; ++l) {
      const TapSet taps = p->layer(l, h);
      for (const auto& [tap, m] : taps) {
        EXPECT_TRUE(m.allFinite()) << p->name() << " layer " << l << " tap " << tap_name(tap);
      }
      h = taps.at(Tap::resid_out);
    }
    for (const auto& [tap, m] : p->head(h)) EXPECT_TRUE(m.allFinite()) << p->name() << " " << tap_name(tap);
  }
}

TEST_F(GpuPaths, KvCacheOverflowIsAnInputError) {
  auto ckpt = synth_model("llama-tiny");
  auto p = make_path("standard-cuda", *ckpt, {});
  p->reset(1, 4);
  const std::vector<std::int32_t> ids = {1, 2, 3, 4, 5};
  EXPECT_THROW(p->layer(0, p->embed(ids)), InputError);
}

TEST_F(GpuPaths, TimeLayerReportsEveryOpWithBytesAndFlops) {
  auto ckpt = synth_model("qwen3-tiny");
  auto p = make_path("standard-cuda", *ckpt, {});
  p->reset(4, 64);
  TimingOptions opts;
  opts.warmup = 2;
  opts.repetitions = 5;
  const std::vector<OpTiming> t = p->time_layer(1, 1, 40, opts);
  ASSERT_GE(t.size(), 10u);
  for (const OpTiming& op : t) {
    EXPECT_GT(op.median_ms, 0.0) << op.op;
    EXPECT_GT(op.bytes, 0.0) << op.op;
    EXPECT_LE(op.p10_ms, op.p90_ms) << op.op;
  }
  EXPECT_EQ(t.back().op, "layer(graph)");
  const bool has_attention = std::any_of(t.begin(), t.end(), [](const OpTiming& o) { return o.op == "attention" && o.flops > 0; });
  EXPECT_TRUE(has_attention);
}

}  // namespace
}  // namespace fusecheck::gpu_test
