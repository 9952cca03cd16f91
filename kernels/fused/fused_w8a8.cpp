// FusedW8a8 (fused_w8a8.h): the E4M3 projection weights of every layer and their ops.
#include "kernels/fused/fused_w8a8.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include <fmt/core.h>

#include "harness/core/error.h"
#include "kernels/fused/fused_layer.h"
#include "kernels/fused/w8a8_gemv.h"
#include "kernels/fused/w8a8_residual.h"

namespace fusecheck::fused {

namespace {

using bf16 = __nv_bfloat16;

struct ProjShape {
  const char* name;
  int n, k;  // output channels, inputs
};

std::array<ProjShape, 4> proj_shapes(const ModelSpec& m) {
  return {ProjShape{"q|k|v", m.q_width() + 2 * m.kv_width(), m.hidden}, ProjShape{"o_proj", m.hidden, m.q_width()},
          ProjShape{"gate|up", 2 * m.intermediate, m.hidden}, ProjShape{"down_proj", m.hidden, m.intermediate}};
}

const ModelSpec& checked(const ModelSpec& spec) {
  check_w8a8_shapes(spec);
  return spec;
}

}  // namespace

void check_w8a8_shapes(const ModelSpec& spec) {
  for (const ProjShape& p : proj_shapes(spec)) {
    try {
      check_fp8_gemm_layout(1, p.n, p.k, nullptr, nullptr, nullptr);
    } catch (const InputError& e) {
      throw InputError("", fmt::format("fused-cuda:fp8-w8a8 cannot run this model: its {} projection is {} x {} "
                                       "(N x K; hidden {}, q_width {}, kv_width {}, intermediate {}): {}",
                                       p.name, p.n, p.k, spec.hidden, spec.q_width(), spec.kv_width(),
                                       spec.intermediate, e.what()));
    }
  }
}

FusedW8a8::FusedW8a8(const ModelSpec& spec) : spec_(checked(spec)) {}

void FusedW8a8::quantize(const std::vector<FusedLayerWeights>& layers, cudaStream_t stream) {
  const auto shapes = proj_shapes(spec_);
  layers_.clear();
  layers_.reserve(layers.size());
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const FusedLayerWeights& w = layers[l];
    const bf16* src[4] = {w.w_qkv.data(), w.w_o.data(), w.w_gate_up.data(), w.w_down.data()};
    std::array<Fp8Weight, 4> q;
    for (int p = 0; p < 4; ++p) {
      q[p] = quantize_weight_e4m3(src[p], shapes[p].n, shapes[p].k,
                                  fmt::format("layer {} {} weight", l, shapes[p].name), stream);
    }
    layers_.push_back(std::move(q));
  }
}

void FusedW8a8::set_gemv_max_rows(int rows) {
  if (rows < 0 || rows > kW8a8GemvMaxRows) {
    throw std::invalid_argument(fmt::format("fp8-w8a8: GEMV rows {} outside 0..{}", rows, kW8a8GemvMaxRows));
  }
  gemv_max_rows_ = rows;
}

void FusedW8a8::project(std::vector<cuda::DeviceOp>& out, W8a8Proj p, int layer, const bf16* in, int rows,
                        const bf16* bias, const bf16* resid, void* y) {
  const Fp8Weight& w = weight(layer, p);
  // Sized for the widest projection at once: the ops made earlier for this call keep
  // pointers into these buffers.
  const auto shapes = proj_shapes(spec_);
  int max_k = 0, max_n = 0;
  for (const ProjShape& s : shapes) max_k = std::max(max_k, s.k), max_n = std::max(max_n, s.n);
  const std::size_t r = static_cast<std::size_t>(rows);
  if (codes_.size() < r * max_k) codes_.resize(r * max_k);
  if (scales_.size() < r) scales_.resize(r);
  if (acc_.size() < r * max_n) acc_.resize(r * max_n);

  static constexpr const char* kQuantNames[] = {"qkv_act_quant(e4m3)", "o_act_quant(e4m3)",
                                                "gate_up_act_quant(e4m3)", "down_act_quant(e4m3)"};
  const int K = w.k, N = w.n;
  const double R = rows;
  __nv_fp8_e4m3* codes = codes_.data();
  float* scales = scales_.data();
  float* acc = acc_.data();
  int* bad_row = rows_.flag();
  out.push_back({kQuantNames[static_cast<int>(p)], R * K * 3.0 + R * 4.0, R * K * 2.0,
                 [=](cudaStream_t s) { launch_quantize_rows_e4m3(in, rows, K, codes, scales, bad_row, s); }});

  const bool fp32_out = p == W8a8Proj::gate_up;
  const bool gemv = rows <= gemv_max_rows_;
  const std::string kind = gemv ? "fp8_gemv" : "fp8_gemm";
  const std::string name = p == W8a8Proj::qkv       ? "qkv_" + kind + (bias ? "+bias" : "")
                           : p == W8a8Proj::o       ? "o_proj_" + kind
                           : p == W8a8Proj::gate_up ? "gate_up_" + kind + "(fp32 out)"
                                                    : "down_proj_" + kind + "+residual";
  // Least bytes: E4M3 weights and inputs, both scale vectors, the output (and residual,
  // bias); the FP32 accumulator's round trip to the epilogue is not counted.
  const double bytes = double(N) * K + N * 4.0 + R * K + R * 4.0 + R * N * (fp32_out ? 4.0 : 2.0) +
                       (resid ? R * N * 2.0 : 0) + (bias ? N * 2.0 : 0);
  Fp8Gemm* gemm = &gemm_;
  const Fp8Weight* wp = &w;
  out.push_back({name, bytes, 2.0 * R * N * K, [=](cudaStream_t s) {
                   if (gemv) {
                     launch_w8a8_gemv(codes, scales, wp->codes.data(), wp->scales.data(), bias, resid, rows, N, K, y,
                                      fp32_out, s);
                   } else if (resid) {
                     gemm->gemm_unit_scales(codes, wp->codes.data(), rows, N, K, acc, s);
                     launch_w8a8_epilogue_residual(acc, scales, wp->scales.data(), resid, rows, N,
                                                   static_cast<bf16*>(y), s);
                   } else {
                     gemm->run(codes, scales, *wp, rows, bias, acc, y, fp32_out, s);
                   }
                 }});
}

}  // namespace fusecheck::fused
