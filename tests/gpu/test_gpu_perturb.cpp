// ref32-cuda's perturb mode and tap filter: the noise injected at a tap has the requested
// relative size, a zero-size perturbation changes nothing, standard-cuda refuses to be
// perturbed, and keep_taps() limits the downloads to the taps asked for.
#include <filesystem>
#include <random>

#include "harness/checkpoint/synth.h"
#include "harness/core/checkpoint.h"
#include "kernels/ref32/ref32_path.h"
#include "kernels/standard/standard_path.h"
#include "tests/gpu/gpu_test_util.h"

namespace fusecheck::gpu_test {
namespace {

std::unique_ptr<Checkpoint> tiny_model() {
  const char* bin = std::getenv("FUSECHECK_BINARY_DIR");
  const std::filesystem::path root = bin ? std::filesystem::path(bin) : std::filesystem::temp_directory_path();
  const std::filesystem::path dir = root / "test-scratch" / "gpu-perturb-models" / "qwen3-tiny";
  if (!std::filesystem::exists(dir / "config.json")) {
    SynthOptions o;
    o.seed = 11;
    write_synthetic_checkpoint("qwen3-tiny", o, dir);
  }
  return Checkpoint::open(dir);
}

std::vector<std::int32_t> tokens(int n, int vocab) {
  std::mt19937 rng(3);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  for (auto& id : ids) id = static_cast<std::int32_t>(rng() % static_cast<unsigned>(vocab));
  return ids;
}

// Layer 0 of a fresh path on `ids` (one sequence).
TapSet layer0(Path& p, const std::vector<std::int32_t>& ids) {
  p.reset(1, static_cast<int>(ids.size()));
  return p.layer(0, p.embed(ids));
}

constexpr int kTokens = 24;

TEST(GpuPerturb, InjectedNoiseHasTheRequestedRelativeSize) {
  FUSECHECK_REQUIRE_GPU();
  const auto ckpt = tiny_model();
  const auto ids = tokens(kTokens, ckpt->spec().vocab);
  auto clean = make_ref32_cuda_path(*ckpt, {});
  auto perturbed = make_ref32_cuda_path(*ckpt, {});
  const double rel = 1e-2;
  perturbed->set_perturbation(Perturbation{0, Tap::k, rel, 42});
  const TapSet a = layer0(*clean, ids), b = layer0(*perturbed, ids);
  const TapMatrix& k = a.at(Tap::k);
  ASSERT_GT(k.norm(), 0.0);
  // ||noise|| = rel * rms(k) * ||n|| ~ rel * ||k||; with ~1e3 N(0,1) draws ||n||/sqrt(N)
  // is within a few percent of 1, so 10% is a real check of the scale.
  const double measured = (b.at(Tap::k) - k).norm() / k.norm();
  EXPECT_NEAR(measured, rel, 0.1 * rel);
  // Taps before k are untouched; k_normed onwards see the perturbed k.
  EXPECT_EQ(a.at(Tap::q), b.at(Tap::q));
  EXPECT_GT((b.at(Tap::k_normed) - a.at(Tap::k_normed)).norm(), 0.0);
  EXPECT_GT((b.at(Tap::resid_out) - a.at(Tap::resid_out)).norm(), 0.0);
}

TEST(GpuPerturb, ZeroSizeChangesNothing) {
  FUSECHECK_REQUIRE_GPU();
  const auto ckpt = tiny_model();
  const auto ids = tokens(kTokens, ckpt->spec().vocab);
  auto clean = make_ref32_cuda_path(*ckpt, {});
  auto perturbed = make_ref32_cuda_path(*ckpt, {});
  perturbed->set_perturbation(Perturbation{0, Tap::k, 0.0, 42});
  const TapSet a = layer0(*clean, ids), b = layer0(*perturbed, ids);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [tap, values] : a) EXPECT_EQ(values, b.at(tap)) << tap_name(tap);
}

TEST(GpuPerturb, StandardCudaRefusesPerturbation) {
  FUSECHECK_REQUIRE_GPU();
  const auto ckpt = tiny_model();
  auto p = make_standard_cuda_path(*ckpt, {});
  EXPECT_THROW(p->set_perturbation(Perturbation{0, Tap::k, 1e-3, 1}), std::logic_error);
}

TEST(GpuPerturb, KeepTapsDownloadsOnlyThoseAsked) {
  FUSECHECK_REQUIRE_GPU();
  const auto ckpt = tiny_model();
  const auto ids = tokens(kTokens, ckpt->spec().vocab);
  auto all = make_ref32_cuda_path(*ckpt, {});
  auto some = make_ref32_cuda_path(*ckpt, {});
  some->keep_taps(std::vector<Tap>{Tap::attn});
  const TapSet a = layer0(*all, ids), b = layer0(*some, ids);
  ASSERT_EQ(b.size(), 2u);  // attn and resid_out (always)
  EXPECT_EQ(b.at(Tap::attn), a.at(Tap::attn));
  EXPECT_EQ(b.at(Tap::resid_out), a.at(Tap::resid_out));
  some->keep_taps(std::nullopt);
  EXPECT_EQ(layer0(*some, ids).size(), a.size());
}

}  // namespace
}  // namespace fusecheck::gpu_test
