// The FP64 kernels of ref64-cuda (see ref64_ops.h). Where ref64-cpu rounds a product
// before adding it (RoPE), the kernels use __dmul_rn/__dadd_rn so that nvcc cannot fuse
// the two into one FMA: the elementwise ops then give the CPU's values bit for bit, and
// only sums (reduction order) differ.
#include "kernels/ref64/ref64_ops.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/common/cuda_check.h"

namespace fusecheck::cuda::ref64 {

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kThreads = 256;
constexpr int kAttentionThreads = 128;

int blocks_for(std::size_t n) {
  return static_cast<int>(std::min<std::size_t>((n + kThreads - 1) / kThreads, 65535u * 8));
}

// Sum over the block (blockDim.x a multiple of 32); every thread gets the same value.
__device__ double block_sum(double v, double* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();  // red may still be read by an earlier reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < warps ? red[lane] : 0.0;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ double block_max(double v, double* red) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(kFullMask, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < warps ? red[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

__global__ void rms_norm_kernel(const double* x, const double* w, double* y, int cols, double eps) {
  __shared__ double red[32];
  const std::size_t base = static_cast<std::size_t>(blockIdx.x) * cols;
  double sumsq = 0;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) sumsq += x[base + j] * x[base + j];
  sumsq = block_sum(sumsq, red);
  const double inv = 1.0 / sqrt(sumsq / static_cast<double>(cols) + eps);
  for (int j = threadIdx.x; j < cols; j += blockDim.x) y[base + j] = w[j] * (x[base + j] * inv);
}

__global__ void rope_kernel(const double* x, double* y, std::size_t pairs, int n_per_seq, int heads,
                            int head_dim, bool interleaved, const double* cos, const double* sin,
                            int start) {
  const int half = head_dim / 2;
  for (std::size_t idx = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; idx < pairs;
       idx += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t per_row = static_cast<std::size_t>(heads) * half;
    const std::size_t r = idx / per_row;
    const int h = static_cast<int>((idx % per_row) / half), i = static_cast<int>(idx % half);
    const std::size_t p = static_cast<std::size_t>(start) + r % static_cast<std::size_t>(n_per_seq);
    const double c = cos[p * half + i], s = sin[p * half + i];
    const std::size_t base = r * heads * head_dim + static_cast<std::size_t>(h) * head_dim;
    const std::size_t ia = base + (interleaved ? 2 * i : i), ib = base + (interleaved ? 2 * i + 1 : i + half);
    const double a = x[ia], b = x[ib];
    y[ia] = __dadd_rn(__dmul_rn(a, c), __dmul_rn(-b, s));
    y[ib] = __dadd_rn(__dmul_rn(b, c), __dmul_rn(a, s));
  }
}

// Shared memory: 32 doubles of reduction scratch, the query row, one score per key.
std::size_t attention_smem_bytes(int head_dim, int keys) {
  return sizeof(double) * (32 + static_cast<std::size_t>(head_dim) + static_cast<std::size_t>(keys));
}

__global__ void attention_kernel(const double* q, const double* k_cache, const double* v_cache, double* out,
                                 AttentionShape a) {
  extern __shared__ double smem[];
  double* red = smem;
  double* qs = smem + 32;
  double* p = qs + a.head_dim;
  const int h = blockIdx.x, t = blockIdx.y, b = blockIdx.z;
  const int D = a.head_dim;
  const std::size_t qw = static_cast<std::size_t>(a.n_heads) * D, kvw = static_cast<std::size_t>(a.n_kv_heads) * D;
  const int g = h / (a.n_heads / a.n_kv_heads);
  const int visible = a.start + t + 1;  // keys at positions <= this query's
  const std::size_t row = static_cast<std::size_t>(b) * a.n_new + t;
  const double* q_row = q + row * qw + static_cast<std::size_t>(h) * D;
  const std::size_t cache_base = static_cast<std::size_t>(b) * a.capacity * kvw + static_cast<std::size_t>(g) * D;
  const double* keys = k_cache + cache_base;
  const double* values = v_cache + cache_base;
  for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = q_row[d];
  __syncthreads();

  // One warp per key: coalesced reads of the key row, a shuffle sum of the dot product.
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int j = warp; j < visible; j += warps) {
    const double* k_row = keys + static_cast<std::size_t>(j) * kvw;
    double dot = 0;
    for (int d = lane; d < D; d += 32) dot += qs[d] * k_row[d];
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(kFullMask, dot, o);
    if (lane == 0) p[j] = dot * a.scale;
  }
  __syncthreads();
  double row_max = -INFINITY;
  for (int j = threadIdx.x; j < visible; j += blockDim.x) row_max = fmax(row_max, p[j]);
  row_max = block_max(row_max, red);
  double sum = 0;
  for (int j = threadIdx.x; j < visible; j += blockDim.x) {
    p[j] = exp(p[j] - row_max);
    sum += p[j];
  }
  sum = block_sum(sum, red);
  for (int j = threadIdx.x; j < visible; j += blockDim.x) p[j] = p[j] / sum;
  __syncthreads();

  double* out_row = out + row * qw + static_cast<std::size_t>(h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    double acc = 0;
    for (int j = 0; j < visible; ++j) acc += p[j] * values[static_cast<std::size_t>(j) * kvw + d];
    out_row[d] = acc;
  }
}

__global__ void silu_mul_kernel(const double* gate, const double* up, double* out, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const double g = gate[i];
    out[i] = (g / (1.0 + exp(-g))) * up[i];
  }
}

__global__ void widen_kernel(const float* in, double* out, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    out[i] = static_cast<double>(in[i]);
  }
}

__global__ void add_kernel(const double* a, const double* b, double* out, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    out[i] = a[i] + b[i];
  }
}

__global__ void broadcast_rows_kernel(const double* bias, double* y, std::size_t n, int cols) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    y[i] = bias[i % static_cast<std::size_t>(cols)];
  }
}

}  // namespace

void rms_norm(const double* x, const double* w, double* y, int rows, int cols, double eps, cudaStream_t s) {
  if (rows <= 0) return;
  const int threads = cols <= 128 ? 128 : kThreads;
  rms_norm_kernel<<<rows, threads, 0, s>>>(x, w, y, cols, eps);
  CUDA_CHECK_LAUNCH();
}

void rope(const double* x, double* y, int rows, int n_per_seq, int heads, int head_dim, bool interleaved,
          const double* cos, const double* sin, int start, cudaStream_t s) {
  const std::size_t pairs = static_cast<std::size_t>(rows) * heads * (head_dim / 2);
  if (pairs == 0) return;
  rope_kernel<<<blocks_for(pairs), kThreads, 0, s>>>(x, y, pairs, n_per_seq, heads, head_dim, interleaved, cos,
                                                     sin, start);
  CUDA_CHECK_LAUNCH();
}

int attention_max_keys(int head_dim, int device) {
  int optin = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const long long keys = static_cast<long long>(optin) / static_cast<long long>(sizeof(double)) - 32 - head_dim;
  return static_cast<int>(std::max<long long>(0, keys));
}

void attention(const double* q, const double* k_cache, const double* v_cache, double* out,
               const AttentionShape& a, int device, cudaStream_t s) {
  const int keys = a.start + a.n_new;
  if (keys > attention_max_keys(a.head_dim, device)) {
    throw CudaError("ref64 attention: " + std::to_string(keys) + " keys exceed the " +
                    std::to_string(attention_max_keys(a.head_dim, device)) +
                    " one block's shared memory holds");
  }
  const std::size_t smem = attention_smem_bytes(a.head_dim, keys);
  CUDA_CHECK(cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>(a.n_heads), static_cast<unsigned>(a.n_new), static_cast<unsigned>(a.batch));
  attention_kernel<<<grid, kAttentionThreads, smem, s>>>(q, k_cache, v_cache, out, a);
  CUDA_CHECK_LAUNCH();
}

void silu_mul(const double* gate, const double* up, double* out, std::size_t n, cudaStream_t s) {
  if (n == 0) return;
  silu_mul_kernel<<<blocks_for(n), kThreads, 0, s>>>(gate, up, out, n);
  CUDA_CHECK_LAUNCH();
}

void widen(const float* in, double* out, std::size_t n, cudaStream_t s) {
  if (n == 0) return;
  widen_kernel<<<blocks_for(n), kThreads, 0, s>>>(in, out, n);
  CUDA_CHECK_LAUNCH();
}

void add(const double* a, const double* b, double* out, std::size_t n, cudaStream_t s) {
  if (n == 0) return;
  add_kernel<<<blocks_for(n), kThreads, 0, s>>>(a, b, out, n);
  CUDA_CHECK_LAUNCH();
}

void broadcast_rows(const double* bias, double* y, int rows, int cols, cudaStream_t s) {
  const std::size_t n = static_cast<std::size_t>(rows) * cols;
  if (n == 0) return;
  broadcast_rows_kernel<<<blocks_for(n), kThreads, 0, s>>>(bias, y, n, cols);
  CUDA_CHECK_LAUNCH();
}

void gemm_xwt(cublasHandle_t h, int rows, int out, int in, const double* x, const double* w, double* y,
              double beta, int ldy) {
  // Column-major view: Y^T (out x rows) = W (stored [out x in], read transposed) X^T.
  const double alpha = 1.0;
  CUBLAS_CHECK(cublasDgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w, in, x, in, &beta, y,
                           ldy > 0 ? ldy : out));
}

}  // namespace fusecheck::cuda::ref64
