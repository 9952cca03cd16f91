// FusedW8a8: FusedLayer's projections in the fp8-w8a8 recipe (docs/recipes.md, "fp8-w8a8";
// the fused-cuda:fp8-w8a8 path). It owns each layer's four projection weights in E4M3 with
// one FP32 scale per output channel (q|k|v, o, gate|up, down; quantized once, from the bf16
// weights FusedLayer holds, by w8a8.h's quantize_weight_e4m3: the twin's codes and scales),
// the activation codes, row scales and FP32 accumulator, and makes each projection's two
// ops in the twin's order (reference/decoder_path.cpp, reference/w8a8.h):
//   quant:  the bf16 input rows -> E4M3 codes, one dynamic scale per token (row);
//   gemm:   acc = A8 . W8^T (cuBLASLt FP8, FP32 accumulation), then one epilogue kernel
//           y = a_s * (w_s * acc) [+ bias], rounded where the twin rounds that output:
//           q|k|v (+bias) and o_proj to bf16, gate|up kept FP32 (SwiGLU reads them, as
//           fused-v1), down added to the residual in FP32 and the sum rounded
//           (w8a8_residual.h).
// lm_head is not here: the recipe keeps it bf16. The bad-row flag (a NaN or Inf input row)
// is armed and checked by the caller around the calls it synchronizes anyway.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <array>
#include <string>
#include <vector>

#include "harness/core/model_spec.h"
#include "kernels/common/device_buffer.h"
#include "kernels/common/device_op.h"
#include "kernels/fused/w8a8.h"

namespace fusecheck::fused {

struct FusedLayerWeights;

enum class W8a8Proj { qkv, o, gate_up, down };

// InputError naming the projection and its N and K unless every FP8 GEMM of a layer of
// `spec` meets cuBLASLt's FP8 layout (K and N multiples of 16: check_fp8_gemm_layout).
// Host only, no device needed: fused-cuda:fp8-w8a8 refuses such a model at creation.
void check_w8a8_shapes(const ModelSpec& spec);

class FusedW8a8 {
 public:
  // Checks the shapes, then the device (InputError below compute capability 8.9).
  explicit FusedW8a8(const ModelSpec& spec);

  // Quantizes every layer's projection weights (synchronizes `stream`); InputError naming
  // the layer, projection and channel when a weight row holds NaN or Inf.
  void quantize(const std::vector<FusedLayerWeights>& layers, cudaStream_t stream);

  // Appends projection `p` of layer `layer` on `rows` rows of `in` (bf16 [rows x K]) to
  // `out`: the quant op, then the gemm op writing y ([rows x N]; FP32 for gate_up, bf16
  // otherwise). `bias` (qkv only) or null; `resid` (down only): the residual it is added to.
  void project(std::vector<cuda::DeviceOp>& out, W8a8Proj p, int layer, const __nv_bfloat16* in, int rows,
               const __nv_bfloat16* bias, const __nv_bfloat16* resid, void* y);

  // Calls of at most `rows` token rows (0: none, the default; at most kW8a8GemvMaxRows) run
  // each projection's GEMM and epilogue as one FP8 GEMV kernel (w8a8_gemv.h) in place of
  // cuBLASLt: same codes, scales and epilogue order, FP32 summation order aside. For the ops
  // made from now on.
  void set_gemv_max_rows(int rows);

  // The bad-row flag of the activation quantization (w8a8.h, Fp8RowCheck).
  Fp8RowCheck& row_check() { return rows_; }
  const Fp8Weight& weight(int layer, W8a8Proj p) const {
    return layers_.at(static_cast<std::size_t>(layer))[static_cast<int>(p)];
  }

 private:
  ModelSpec spec_;
  Fp8Gemm gemm_;
  std::vector<std::array<Fp8Weight, 4>> layers_;
  cuda::DeviceBuffer<__nv_fp8_e4m3> codes_;  // [rows x K], the projection's input
  cuda::DeviceBuffer<float> scales_;         // [rows]
  cuda::DeviceBuffer<float> acc_;            // [rows x N]
  Fp8RowCheck rows_;
  int gemv_max_rows_ = 0;
};

}  // namespace fusecheck::fused
