// The device route of run_side_by_side (taps stay on the GPU, the CUDA plug-in's ABI 1.3
// tap_metrics / next_token compute what the host computed) against the host route on the
// CI models (qwen3-tiny, llama-tiny, stories260K): fused-cuda and standard-cuda against
// ref32-cuda, isolated + propagated + perturb, and a CPU path in the same run (the host
// route for it alone); every metric of every cell within 1e-12 relative of the host
// route's, counts, ULP figures, gates and top-1 matches exact; the same with the ref64-cuda
// noise floor on; --dump-failing copies back the failing cells' taps alone, equal to the
// host route's. Passing this is what flips run_command.h's kDeviceMetricsByDefault.
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "fusecheck/path_plugin.h"

#include "harness/core/path_registry.h"
#include "harness/run/driver.h"
#include "tests/common/ci_models.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/gpu/route_compare.h"

namespace fusecheck::gpu_test {
namespace {

// Both routes run the same kernels on the same inputs; the metrics differ only by the
// order of their FP64 sums (route_compare.h). These are exact on both.
bool is_count(std::string_view f) {
  return f == "nan_count" || f == "inf_count" || f == "ref_nonfinite" || f == "overflow_count" ||
         f == "saturation_count" || f == "ulp_p50" || f == "ulp_p99" || f == "ulp_max";
}

void expect_tables(const run::ModeTable& dev, const run::ModeTable& host, const std::string& what) {
  ASSERT_EQ(dev.layers.size(), host.layers.size());
  auto cell = [&](const std::optional<run::TapMetrics>& d, const std::optional<run::TapMetrics>& h,
                  const std::string& where) {
    ASSERT_EQ(d.has_value(), h.has_value()) << where;
    if (!d) return;
    for (const auto& f : run::kMetricFields) {
      const std::string w = where + " " + std::string(f.name);
      if (is_count(f.name) && !std::isnan((*h).*f.member)) {
        EXPECT_EQ((*d).*f.member, (*h).*f.member) << w;
      } else {
        expect_route_close((*d).*f.member, (*h).*f.member, w);
      }
    }
  };
  for (std::size_t l = 0; l < host.layers.size(); ++l) {
    for (int c = 0; c < run::kNumLayerTaps; ++c) {
      cell(dev.layers[l][c], host.layers[l][c], what + " layer " + std::to_string(l) + " " +
                                                    std::string(tap_name(kLayerTaps[c])));
    }
    EXPECT_EQ(dev.gate[l], host.gate[l]) << what << " layer " << l;
  }
  for (int c = 0; c < run::kNumHeadTaps; ++c) {
    cell(dev.head[c], host.head[c], what + " head " + std::string(tap_name(kHeadTaps[c])));
  }
  EXPECT_EQ(dev.gate_failures, host.gate_failures) << what;
  EXPECT_EQ(dev.first_divergent_layer, host.first_divergent_layer) << what;
}

void expect_same_run(const run::RunResult& dev, const run::RunResult& host) {
  EXPECT_TRUE(dev.device_metrics);
  EXPECT_FALSE(host.device_metrics);
  ASSERT_EQ(dev.paths.size(), host.paths.size());
  for (std::size_t i = 0; i < host.paths.size(); ++i) {
    const run::PathResult &d = dev.paths[i], &h = host.paths[i];
    SCOPED_TRACE(h.slot.label());
    expect_tables(*d.isolated, *h.isolated, "isolated");
    expect_tables(*d.propagated, *h.propagated, "propagated");
    ASSERT_TRUE(d.end_to_end && h.end_to_end);
    ASSERT_EQ(d.end_to_end->kl.size(), h.end_to_end->kl.size());
    for (std::size_t p = 0; p < h.end_to_end->kl.size(); ++p) {
      expect_kl_close(d.end_to_end->kl[p], h.end_to_end->kl[p], "kl at position " + std::to_string(p));
    }
    EXPECT_EQ(d.end_to_end->ref_margin, h.end_to_end->ref_margin);
    EXPECT_EQ(d.end_to_end->top1_match, h.end_to_end->top1_match);
    expect_kl_close(d.end_to_end->kl_mean, h.end_to_end->kl_mean, "kl_mean");
    expect_kl_close(d.end_to_end->kl_p99, h.end_to_end->kl_p99, "kl_p99");
    EXPECT_EQ(d.end_to_end->top1_agreement, h.end_to_end->top1_agreement);
    ASSERT_EQ(d.dumps.size(), h.dumps.size());
    for (std::size_t k = 0; k < h.dumps.size(); ++k) {
      EXPECT_EQ(d.dumps[k].layer, h.dumps[k].layer);
      EXPECT_EQ(d.dumps[k].tap, h.dumps[k].tap);
      EXPECT_TRUE(d.dumps[k].reference == h.dumps[k].reference) << "dump " << k;
      EXPECT_TRUE(d.dumps[k].path == h.dumps[k].path) << "dump " << k;
    }
  }
  ASSERT_EQ(dev.noise_floor_isolated.has_value(), host.noise_floor_isolated.has_value());
  if (host.noise_floor_isolated) {
    expect_tables(*dev.noise_floor_isolated, *host.noise_floor_isolated, "noise floor isolated");
    expect_tables(*dev.noise_floor_propagated, *host.noise_floor_propagated, "noise floor propagated");
  }
  ASSERT_TRUE(dev.perturb && host.perturb);
  for (std::size_t l = 0; l < host.perturb->sensitivity.size(); ++l) {
    for (int c = 0; c < run::kNumLayerTaps; ++c) {
      expect_route_close(dev.perturb->sensitivity[l][c], host.perturb->sensitivity[l][c],
                   "sensitivity layer " + std::to_string(l) + " tap " + std::to_string(c));
    }
  }
  for (int c = 0; c < run::kNumHeadTaps; ++c) {
    expect_route_close(dev.perturb->head_sensitivity[c], host.perturb->head_sensitivity[c], "head sensitivity");
  }
  EXPECT_EQ(dev.gate_failures, host.gate_failures);
  ASSERT_EQ(dev.reference_greedy.size(), 5u);
  EXPECT_EQ(dev.reference_greedy, host.reference_greedy);
  for (std::size_t i = 0; i < host.paths.size(); ++i) {
    EXPECT_EQ(dev.paths[i].greedy_tokens, host.paths[i].greedy_tokens) << host.paths[i].slot.label();
    EXPECT_EQ(dev.paths[i].greedy_first_mismatch, host.paths[i].greedy_first_mismatch) << host.paths[i].slot.label();
  }
}

run::PathSlot slot(const std::string& name, DType dtype) {
  run::PathSlot s;
  s.requested.name = name;
  s.name = name;
  s.role = "other";
  s.dtype = dtype;
  return s;
}

run::RunConfig config(const Checkpoint& ckpt, bool device, bool ref64, int batch, int n) {
  run::RunConfig cfg;
  cfg.n_layers = ckpt.spec().n_layers;
  for (int b = 0; b < batch; ++b) {
    std::vector<std::int32_t> seq;
    for (int t = 0; t < n; ++t) seq.push_back((7 * b + 13 * t + 1) % ckpt.spec().vocab);  // seeded, not zeros
    cfg.tokens.push_back(seq);
  }
  cfg.phase = {run::Phase::Prefill, n, 0};
  cfg.reference = "ref32-cuda";
  cfg.ref64 = ref64;
  cfg.ref64_path = "ref64-cuda";
  cfg.modes.perturb = run::PerturbSpec{1, Tap::q, 1e-3};
  cfg.seeds.perturbation = 11;
  cfg.timing.enabled = false;  // timing is not what this compares
  cfg.greedy_steps = 5;         // the device route decodes on the device: the same tokens
  cfg.device_metrics = device;
  return cfg;
}

run::PathMaker maker(const Checkpoint& ckpt) {
  return [&ckpt](const std::string& name, const std::string& recipe) {
    PathOptions o;
    o.recipe = recipe;
    o.seed = 3;
    return make_path(name, ckpt, o);
  };
}

const std::vector<run::PathSlot> kSlots = {slot("fused-cuda", DType::BF16), slot("standard-cuda", DType::BF16),
                                           slot("ref32-cpu", DType::F32)};

class GpuDeviceRoute : public ::testing::Test {
 protected:
  void SetUp() override {
    FUSECHECK_REQUIRE_GPU();
    register_builtin_paths();
  }
  static void compare(bool ref64, bool dump) {
    for (const auto& m : test::ci_models()) {
      SCOPED_TRACE(m.label);
      const int n = m.label == "stories260K" ? 48 : 40;
      auto dev_cfg = config(*m.ckpt, true, ref64, 2, n), host_cfg = config(*m.ckpt, false, ref64, 2, n);
      if (dump) {
        run::GateSpec strict;
        strict.all.rel_l2 = 1e-9;  // every bf16 cell fails: its taps are dumped (16 per mode at most)
        dev_cfg.gates = host_cfg.gates = strict;
        dev_cfg.dump_failing = host_cfg.dump_failing = true;
      }
      const run::RunResult dev = run::run_side_by_side(dev_cfg, kSlots, maker(*m.ckpt));
      const run::RunResult host = run::run_side_by_side(host_cfg, kSlots, maker(*m.ckpt));
      if (dump) {
        ASSERT_FALSE(host.paths[0].dumps.empty());
      }
      expect_same_run(dev, host);
    }
  }
};

TEST_F(GpuDeviceRoute, MatchesTheHostRouteOnTheCiModels) { compare(false, false); }
TEST_F(GpuDeviceRoute, MatchesTheHostRouteWithTheRef64NoiseFloor) { compare(true, false); }
TEST_F(GpuDeviceRoute, DumpFailingBringsBackTheHostRoutesTensors) { compare(false, true); }

// The CUDA plug-in's ABI 1.3 entries check what they are handed: a tensor said to be in
// device memory that is not (a host pointer), or in host memory, is bad input naming the
// argument, never a crash or a read of the wrong memory.
TEST_F(GpuDeviceRoute, ThePluginRefusesTensorsThatAreNotDeviceMemory) {
  void* lib = dlopen(FUSECHECK_TEST_CUDA_PLUGIN, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(lib, nullptr) << dlerror();
  const auto entry = reinterpret_cast<fc_plugin_entry>(dlsym(lib, FC_PLUGIN_ENTRY_POINT));
  ASSERT_NE(entry, nullptr);
  const fc_plugin* t = entry();
  ASSERT_GE(t->abi_minor, 3u);
  ASSERT_NE(t->tap_metrics, nullptr);
  std::vector<float> host(4 * 8, 1.0f);
  fc_tensor a{};
  a.dtype = FC_F32, a.memory = FC_CUDA_DEVICE, a.rank = 2;
  a.shape[0] = 4, a.shape[1] = 8, a.strides[0] = 8, a.strides[1] = 1;
  a.data = host.data();
  cuda::DeviceBuffer<float> dev(host.size());
  dev.upload(host);
  fc_tensor b = a;
  b.data = dev.data();
  fc_metrics_request req{};
  req.struct_size = sizeof req;
  req.device_index = 0;
  req.path_dtype = FC_BF16;
  req.atol = 1e-5, req.rtol = 1.6e-2;
  fc_tap_summary out{};
  out.struct_size = sizeof out;
  fc_error err{};
  EXPECT_EQ(t->tap_metrics(&req, &a, &b, &out, &err), FC_ERR_INPUT);
  EXPECT_NE(std::string(err.message).find("tap_metrics reference: the pointer is not CUDA device memory"),
            std::string::npos) << err.message;
  fc_tensor h = b;
  h.memory = FC_HOST;
  EXPECT_EQ(t->tap_metrics(&req, &b, &h, &out, &err), FC_ERR_INPUT);
  EXPECT_NE(std::string(err.message).find("tap_metrics path: not in device memory"), std::string::npos) << err.message;
  // The same tensors, both on the device, are measured: identical values, zero error.
  ASSERT_EQ(t->tap_metrics(&req, &b, &b, &out, &err), 0) << err.message;
  EXPECT_EQ(out.rel_l2, 0.0);
  EXPECT_EQ(out.ulp_max, 0.0);
  EXPECT_EQ(out.struct_size, sizeof out);
}

}  // namespace
}  // namespace fusecheck::gpu_test
