// ref64-cuda against ref64-cpu: the same FP64 model, so every tap agrees to FP64 rounding
// grown by the different summation orders of GEMMs, norms and softmax, far below 1e-13
// relative. On the CI models (synthetic qwen3-tiny and llama-tiny, the real stories260K),
// on small random checkpoints of awkward shapes (5 query heads over 1 kv head, Qwen2
// biases, 9 heads over 3 with head_dim 8; batch 3; KV lengths 1 and 1025), fed their own
// outputs for a whole model (propagated), perturbed alike, and with poisoned tap buffers.
// The kernels alone are checked exactly first: where ref64-cpu's op has the same
// arithmetic in the same order (RoPE, the residual add, RMSNorm and GEMMs on small
// integers, whose sums are exact) the GPU must give the same bits.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <random>

#include "harness/core/checkpoint.h"
#include "harness/core/path_registry.h"
#include "kernels/common/cublas_handle.h"
#include "kernels/common/stream.h"
#include "kernels/ref64/ref64_cuda_path.h"
#include "kernels/ref64/ref64_ops.h"
#include "reference/ops.h"
#include "reference/random_checkpoint.h"
#include "tests/common/ci_models.h"
#include "tests/common/small_specs.h"
#include "tests/common/test_support.h"
#include "tests/gpu/gpu_test_util.h"

namespace fusecheck::gpu_test {
namespace {

// FP64 rounding is 1.1e-16 relative; summed in another order over at most a few thousand
// terms (lm_head rows, 1025 keys) and through a softmax, a tap moves by ~1e-15. 1e-13
// leaves two orders of margin and is still eight orders below FP32's 6e-8, so a float
// anywhere in the chain (a cast, an FP32 GEMM, a TF32 mode) fails it.
constexpr double kFp64TapTolerance = 1e-13;

using test::ci_models;
using test::Model;
using test::synth_model;

// kOddShapes stored as F32; llama with interleaved pairs.
ModelSpec odd_spec(const std::string& arch) {
  return test::two_layer_spec(arch, test::kOddShapes, RopeStyle::Interleaved, "F32");
}

// Worst distances of one tap over every layer and step.
struct TapDiff {
  double rel_l2 = 0;    // ||gpu - cpu|| / ||cpu||
  double max_rel = 0;   // max |gpu - cpu| / max |cpu| (elementwise, scaled by the tap's range)
  int seen = 0;
};
using Diffs = std::map<Tap, TapDiff>;

void record(Diffs& out, const TapSet& cpu, const TapSet& gpu) {
  for (const auto& [tap, want] : cpu) {
    auto got = gpu.find(tap);
    ASSERT_NE(got, gpu.end()) << "ref64-cuda lacks tap " << tap_name(tap);
    ASSERT_EQ(got->second.rows(), want.rows()) << tap_name(tap);
    ASSERT_EQ(got->second.cols(), want.cols()) << tap_name(tap);
    ASSERT_GT(want.norm(), 0.0) << tap_name(tap) << ": all zeros, the comparison would pass by accident";
    TapDiff& d = out[tap];
    ++d.seen;
    if (!got->second.allFinite()) {
      d.rel_l2 = d.max_rel = INFINITY;  // NaN (a poisoned element left unwritten) never passes
      continue;
    }
    d.rel_l2 = std::max(d.rel_l2, (got->second - want).norm() / want.norm());
    d.max_rel = std::max(d.max_rel, (got->second - want).cwiseAbs().maxCoeff() / want.cwiseAbs().maxCoeff());
  }
}

// Both paths through `steps` (tokens per sequence per call) for `batch` sequences. Isolated:
// each layer of both gets ref64-cpu's input; propagated: each path feeds itself.
Diffs compare(Path& cpu, Path& gpu, const ModelSpec& s, int batch, const std::vector<int>& steps, bool propagated,
              std::uint64_t seed) {
  int capacity = 0;
  for (int n : steps) capacity += n;
  cpu.reset(batch, capacity);
  gpu.reset(batch, capacity);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> tok(0, s.vocab - 1);
  Diffs out;
  for (int n : steps) {
    std::vector<std::int32_t> ids(static_cast<std::size_t>(batch) * n);
    for (auto& id : ids) id = tok(rng);
    TapMatrix h = cpu.embed(ids);
    EXPECT_TRUE(gpu.embed(ids) == h) << "embeddings differ";
    TapMatrix h_gpu = h;
    for (int l = 0; l < s.n_layers; ++l) {
      const TapSet want = cpu.layer(l, h);
      const TapSet got = gpu.layer(l, propagated ? h_gpu : h);
      record(out, want, got);
      h = want.at(Tap::resid_out);
      h_gpu = got.at(Tap::resid_out);
    }
    record(out, cpu.head(h), gpu.head(propagated ? h_gpu : h));
  }
  return out;
}

void print(const std::string& title, const Diffs& diffs) {
  std::cout << title << "\n";
  for (const auto& [tap, d] : diffs) {
    std::cout << "  " << std::setw(11) << tap_name(tap) << "  rel_l2 " << std::scientific << std::setprecision(2)
              << d.rel_l2 << "  max_rel " << d.max_rel << "\n";
  }
  std::cout << std::defaultfloat;
}

void expect_fp64_agreement(const Diffs& diffs, const Path& gpu, const std::string& where) {
  EXPECT_EQ(diffs.size(), gpu.taps().size()) << where << ": every layer and head tap compared";
  for (const auto& [tap, d] : diffs) {
    EXPECT_LT(d.rel_l2, kFp64TapTolerance) << where << " tap " << tap_name(tap);
    EXPECT_LT(d.max_rel, kFp64TapTolerance) << where << " tap " << tap_name(tap);
  }
}

// ---- The kernels, bit for bit against reference/ops.h ----

using ref::Mat;
using ref::Vec;

// Seeded small integers in [-k, k] (never all zero), exact in every sum the tests make.
Mat<double> small_integer_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed, int k = 3) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> d(-k, k);
  Mat<double> m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = d(rng);
  m.data()[0] = 1;
  return m;
}

Mat<double> random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0.0, 1.0);
  Mat<double> m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = d(rng);
  return m;
}

cuda::DeviceBuffer<double> to_device(const Mat<double>& m) {
  cuda::DeviceBuffer<double> d;
  d.upload(m.data(), static_cast<std::size_t>(m.size()));
  // The upload runs on the legacy stream and the kernels under test on a non-blocking one,
  // which does not wait for it: without this, a kernel could read the buffer before the
  // copy lands (the RoPE test once read stale memory this way on an H200).
  CUDA_CHECK(cudaDeviceSynchronize());
  return d;
}

Mat<double> to_host(const cuda::DeviceBuffer<double>& d, Eigen::Index rows, Eigen::Index cols) {
  Mat<double> m(rows, cols);
  CUDA_CHECK(cudaMemcpy(m.data(), d.data(), static_cast<std::size_t>(m.size()) * sizeof(double),
                        cudaMemcpyDeviceToHost));
  return m;
}

class Ref64Kernels : public ::testing::Test {
 protected:
  void SetUp() override { FUSECHECK_REQUIRE_GPU(); }
};

// Every product rounded, then the sum (no FMA on either side): identical on real data.
TEST_F(Ref64Kernels, RopeIsBitIdenticalToTheCpuOp) {
  cuda::Stream stream;  // after SetUp: creating one needs a device
  ModelSpec spec;
  spec.head_dim = 12, spec.rope_dim = 12, spec.rope_theta = 1e6, spec.max_position = 4096;
  for (const RopeStyle style : {RopeStyle::NeoxHalfSplit, RopeStyle::Interleaved}) {
    const int heads = 3, n = 7, batch = 3, start = 5;  // positions 5..11 of each sequence
    const Mat<double> x = random_matrix(batch * n, heads * spec.head_dim, 31);
    const ref::RopeTable<double> all = ref::rope_table<double>(spec, 0, start + n);
    const ref::RopeTable<double> window = ref::rope_table<double>(spec, start, n);
    Mat<double> want = x;
    ref::NoRounding<double> none;
    ref::apply_rope(want, spec.head_dim, style, window, n, none, RoundPoint::q_rope);
    auto dx = to_device(x), dcos = to_device(all.cos), dsin = to_device(all.sin);
    cuda::DeviceBuffer<double> dy(static_cast<std::size_t>(x.size()));
    cuda::ref64::rope(dx.data(), dy.data(), batch * n, n, heads, spec.head_dim, style == RopeStyle::Interleaved,
                      dcos.data(), dsin.data(), start, stream);
    stream.synchronize();
    const Mat<double> got = to_host(dy, x.rows(), x.cols());
    Eigen::Index differ = 0, first = -1;
    double worst = 0;
    for (Eigen::Index e = 0; e < got.size(); ++e) {
      if (got.data()[e] == want.data()[e]) continue;
      if (first < 0) first = e;
      ++differ;
      worst = std::max(worst, std::abs(got.data()[e] - want.data()[e]) / std::max(std::abs(want.data()[e]), 1e-300));
    }
    EXPECT_EQ(differ, 0) << (style == RopeStyle::Interleaved ? "interleaved" : "neox") << ": first at element "
                         << first << " (row " << (first < 0 ? -1 : first / got.cols()) << ", col "
                         << (first < 0 ? -1 : first % got.cols()) << "), worst relative " << worst;
  }
}

// Sums of squares of small integers are exact; the rest is one sqrt, one divide and two
// products per element on both sides.
TEST_F(Ref64Kernels, RmsNormOnSmallIntegersIsBitIdenticalToTheCpuOp) {
  cuda::Stream stream;  // after SetUp: creating one needs a device
  for (const int group : {7, 16, 300}) {  // a head, a power of two, more than one block of threads
    const Mat<double> x = small_integer_matrix(5, 2 * group, 41 + group);
    const Mat<double> w_row = random_matrix(1, group, 43);
    const Vec<double> w = w_row.row(0).transpose();
    ref::NoRounding<double> none;
    const Mat<double> want =
        ref::rms_norm(x, w, 1e-6, group, none, {RoundPoint::attn_norm_sumsq, RoundPoint::attn_norm_normalized,
                                                RoundPoint::attn_norm});
    auto dx = to_device(x), dw = to_device(w_row);
    cuda::DeviceBuffer<double> dy(static_cast<std::size_t>(x.size()));
    cuda::ref64::rms_norm(dx.data(), dw.data(), dy.data(), 10, group, 1e-6, stream);
    stream.synchronize();
    EXPECT_TRUE(to_host(dy, x.rows(), x.cols()) == want) << "group " << group;
  }
}

// DGEMM on small integers: every partial sum is an exact integer, whatever the order.
TEST_F(Ref64Kernels, DgemmOnSmallIntegersIsExactWithAndWithoutBias) {
  cuda::Stream stream;  // after SetUp: creating one needs a device
  cuda::CublasHandle cublas(stream);
  const int rows = 3, out = 37, in = 129;
  const Mat<double> x = small_integer_matrix(rows, in, 51), w = small_integer_matrix(out, in, 52);
  const Mat<double> bias = small_integer_matrix(1, out, 53, 9);
  auto dx = to_device(x), dw = to_device(w), dbias = to_device(bias);
  cuda::DeviceBuffer<double> dy(static_cast<std::size_t>(rows) * out);
  cuda::ref64::gemm_xwt(cublas, rows, out, in, dx.data(), dw.data(), dy.data());
  stream.synchronize();
  const Mat<double> product = x * w.transpose();
  EXPECT_TRUE(to_host(dy, rows, out) == product);
  cuda::ref64::broadcast_rows(dbias.data(), dy.data(), rows, out, stream);
  cuda::ref64::gemm_xwt(cublas, rows, out, in, dx.data(), dw.data(), dy.data(), 1.0);
  stream.synchronize();
  Mat<double> with_bias = product;
  with_bias.rowwise() += bias.row(0);
  EXPECT_TRUE(to_host(dy, rows, out) == with_bias);
}

TEST_F(Ref64Kernels, AddAndWidenAreExact) {
  cuda::Stream stream;  // after SetUp: creating one needs a device
  const Mat<double> a = random_matrix(3, 1001, 61), b = random_matrix(3, 1001, 62);
  auto da = to_device(a), db = to_device(b);
  cuda::DeviceBuffer<double> dsum(static_cast<std::size_t>(a.size()));
  cuda::ref64::add(da.data(), db.data(), dsum.data(), static_cast<std::size_t>(a.size()), stream);
  std::vector<float> f(1001);
  for (std::size_t i = 0; i < f.size(); ++i) f[i] = static_cast<float>(a.data()[i]);
  cuda::DeviceBuffer<float> df;
  df.upload(f, stream);
  cuda::DeviceBuffer<double> dwide(f.size());
  cuda::ref64::widen(df.data(), dwide.data(), f.size(), stream);
  stream.synchronize();
  EXPECT_TRUE(to_host(dsum, a.rows(), a.cols()) == Mat<double>(a + b));
  const Mat<double> wide = to_host(dwide, 1, static_cast<Eigen::Index>(f.size()));
  for (std::size_t i = 0; i < f.size(); ++i) ASSERT_EQ(wide(0, static_cast<Eigen::Index>(i)), static_cast<double>(f[i]));
}

// ---- The path ----

class Ref64Cuda : public ::testing::Test {
 protected:
  void SetUp() override {
    FUSECHECK_REQUIRE_GPU();
    register_builtin_paths();
  }
};

TEST_F(Ref64Cuda, IsRegisteredAndExposesEveryTapOfRef64Cpu) {
  for (const std::string profile : {"qwen3-tiny", "llama-tiny"}) {
    auto ckpt = synth_model(profile);
    auto gpu = make_path("ref64-cuda", *ckpt, {});
    auto cpu = make_path("ref64-cpu", *ckpt, {});
    EXPECT_EQ(gpu->name(), "ref64-cuda");
    EXPECT_NE(gpu->device(), "cpu");
    EXPECT_EQ(gpu->taps().size(), cpu->taps().size() + kHeadTaps.size()) << profile;
    EXPECT_TRUE(gpu->capabilities().perturbation);
  }
}

TEST_F(Ref64Cuda, MatchesRef64CpuOnEveryTapOfTheCiModels) {
  for (const Model& m : ci_models()) {
    auto cpu = make_path("ref64-cpu", *m.ckpt, {});
    auto gpu = make_path("ref64-cuda", *m.ckpt, {});
    const Diffs d = compare(*cpu, *gpu, m.ckpt->spec(), 2, {6, 1, 1, 1}, false, 1234);
    print("ref64-cuda vs ref64-cpu, " + m.label + " (isolated, batch 2, prefill 6 + 3 decode steps):", d);
    expect_fp64_agreement(d, *gpu, m.label);
  }
}

// The figure scripts/gpu-check-18 reports: a whole model, each path on its own outputs.
TEST_F(Ref64Cuda, MatchesRef64CpuPropagatedThroughStories260K) {
  auto dir = test::models_dir();
  if (!dir || !std::filesystem::exists(*dir / "stories260K.gguf")) GTEST_SKIP() << test::models_dir_skip_reason();
  auto ckpt = Checkpoint::open(*dir / "stories260K.gguf");
  auto cpu = make_path("ref64-cpu", *ckpt, {});
  auto gpu = make_path("ref64-cuda", *ckpt, {});
  const Diffs d = compare(*cpu, *gpu, ckpt->spec(), 1, {32, 1, 1, 1, 1}, true, 99);
  print("ref64-cuda vs ref64-cpu, stories260K (propagated, prefill 32 + 4 decode steps):", d);
  double worst_l2 = 0, worst_max = 0;
  for (const auto& [tap, x] : d) worst_l2 = std::max(worst_l2, x.rel_l2), worst_max = std::max(worst_max, x.max_rel);
  std::cout << "ref64-cuda vs ref64-cpu stories260K: max rel_l2 " << std::scientific << std::setprecision(2)
            << worst_l2 << ", max elementwise rel " << worst_max << std::defaultfloat << "\n";
  expect_fp64_agreement(d, *gpu, "stories260K propagated");
}

class Ref64CudaOddShapes : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    FUSECHECK_REQUIRE_GPU();
    register_builtin_paths();
  }
};

// Batch 3: one token (a KV cache of 1), a 1024-token chunk (1025 keys, more than one
// block's worth of any power of two up to 1024), then a decode step.
TEST_P(Ref64CudaOddShapes, BatchThreeKvOneAnd1025) {
  const ModelSpec spec = odd_spec(GetParam());
  ref::RandomCheckpoint ckpt(spec, 21, DType::F32);
  auto cpu = make_path("ref64-cpu", ckpt, {});
  auto gpu = make_ref64_cuda_path(ckpt, {}, {.poison_activations = true});
  const Diffs d = compare(*cpu, *gpu, spec, 3, {1, 1024, 1}, false, 5);
  print("ref64-cuda vs ref64-cpu, random " + GetParam() + " (batch 3, KV 1, 1025, 1026):", d);
  expect_fp64_agreement(d, *gpu, GetParam());
}

INSTANTIATE_TEST_SUITE_P(RandomCheckpoints, Ref64CudaOddShapes, ::testing::Values("qwen3", "qwen2", "llama"));

// The perturbed FP64 truth: the same seeded noise in the same element order on both.
TEST_F(Ref64Cuda, PerturbsLikeRef64Cpu) {
  const ModelSpec spec = odd_spec("qwen3");
  ref::RandomCheckpoint ckpt(spec, 3, DType::F32);
  for (const Tap tap : {Tap::k_normed, Tap::act, Tap::logits}) {
    auto cpu = make_path("ref64-cpu", ckpt, {});
    auto gpu = make_path("ref64-cuda", ckpt, {});
    const Perturbation p{0, tap, 1e-3, 77};
    cpu->set_perturbation(p);
    gpu->set_perturbation(p);
    const Diffs d = compare(*cpu, *gpu, spec, 2, {5, 1, 1}, true, 8);
    expect_fp64_agreement(d, *gpu, std::string("perturbed at ") + std::string(tap_name(tap)));
  }
}

TEST_F(Ref64Cuda, PoisonedTapsAreFullyWritten) {
  auto ckpt = synth_model("qwen3-tiny");
  auto p = make_ref64_cuda_path(*ckpt, {}, {.poison_activations = true});
  p->reset(3, 9);
  const std::vector<std::int32_t> ids = {5, 17, 29, 41, 53, 65, 77, 89, 101};  // 3 x 3
  TapMatrix h = p->embed(ids);
  for (int l = 0; l < ckpt->spec().n_layers; ++l) {
    const TapSet taps = p->layer(l, h);
    EXPECT_EQ(taps.size(), p->taps().size() - kHeadTaps.size());
    for (const auto& [tap, m] : taps) EXPECT_TRUE(m.allFinite()) << "layer " << l << " tap " << tap_name(tap);
    h = taps.at(Tap::resid_out);
  }
  for (const auto& [tap, m] : p->head(h)) EXPECT_TRUE(m.allFinite()) << tap_name(tap);
}

TEST_F(Ref64Cuda, KeepTapsDownloadsOnlyThoseAndResidOut) {
  auto ckpt = synth_model("llama-tiny");
  auto p = make_path("ref64-cuda", *ckpt, {});
  p->reset(1, 4);
  p->keep_taps(std::vector<Tap>{Tap::attn});
  const std::vector<std::int32_t> ids = {3, 1, 4};
  const TapSet taps = p->layer(0, p->embed(ids));
  EXPECT_EQ(taps.size(), 2u);
  EXPECT_TRUE(taps.count(Tap::attn) && taps.count(Tap::resid_out));
}

TEST_F(Ref64Cuda, ContextBeyondItsAttentionIsRefusedAtReset) {
  auto ckpt = synth_model("llama-tiny");
  auto p = make_path("ref64-cuda", *ckpt, {});
  EXPECT_THROW(p->reset(1, 1 << 20), std::exception) << "a million keys do not fit one block's shared memory";
  EXPECT_NO_THROW(p->reset(1, 4096));
}

}  // namespace
}  // namespace fusecheck::gpu_test
