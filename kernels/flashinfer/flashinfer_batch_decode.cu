// FlashInfer 0.6.18's batch decode over a paged KV cache (flashinfer_batch_decode.h): the
// DecodePlan, BatchDecodeWithPagedKVCacheDispatched and AppendPagedKVCache calls that
// FlashInfer's own batch_decode.cu / page.cu bindings make for vLLM and SGLang, with bf16
// Q/KV/O, NHD pages of 16, DefaultAttention, no RoPE inside, no CUDA graph (the plan splits
// the KV only when it pays), no PDL.
#include <algorithm>
#include <exception>
#include <stdexcept>
#include <string>

#include <flashinfer/attention/decode.cuh>
#include <flashinfer/attention/default_decode_params.cuh>
#include <flashinfer/attention/scheduler.cuh>
#include <flashinfer/attention/variants.cuh>
#include <flashinfer/page.cuh>

#include "kernels/flashinfer/flashinfer_batch_decode.h"
#include "kernels/flashinfer/flashinfer_checked.h"
#include "kernels/flashinfer/flashinfer_ops.h"

namespace fusecheck::flashinfer_ops {

namespace {

using IdType = std::int32_t;
using Variant = flashinfer::DefaultAttention</*custom_mask=*/false, /*sliding_window=*/false,
                                             /*logits_soft_cap=*/false, /*alibi=*/false>;
using Params = flashinfer::BatchDecodeParams<bf16, bf16, bf16, IdType>;
using PagedKvT = flashinfer::paged_kv_t<bf16, IdType>;

void cuda_ok(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

// Device (or page-locked host) bytes that grow and never shrink.
struct Bytes {
  bool pinned = false;
  void* ptr = nullptr;
  std::size_t size = 0;
  explicit Bytes(bool host_pinned) : pinned(host_pinned) {}
  ~Bytes() { release(); }
  Bytes(const Bytes&) = delete;
  Bytes& operator=(const Bytes&) = delete;
  void release() {
    if (ptr) pinned ? cudaFreeHost(ptr) : cudaFree(ptr);  // no throw from a destructor
    ptr = nullptr, size = 0;
  }
  void grow(std::size_t need) {
    if (need <= size) return;
    release();
    cuda_ok(pinned ? cudaMallocHost(&ptr, need) : cudaMalloc(&ptr, need), "flashinfer batch decode workspace");
    size = need;
  }
};

template <int D>
cudaError_t work_estimation_and_plan(int group, bool count_only, std::size_t& float_bytes, std::size_t& int_bytes,
                                     Bytes& float_ws, Bytes& int_ws, Bytes& int_host,
                                     flashinfer::DecodePlanInfo& info, IdType* indptr_h, std::uint32_t batch,
                                     std::uint32_t n_heads, cudaStream_t s) {
  cudaError_t status = cudaSuccess;
  DISPATCH_GQA_GROUP_SIZE(group, GROUP_SIZE, {
    auto estimate = flashinfer::BatchDecodeWithPagedKVCacheWorkEstimationDispatched<
        GROUP_SIZE, D, flashinfer::PosEncodingMode::kNone, Variant, Params>;
    if (count_only) {
      status = flashinfer::DecodePlanWorkspaceSize<D, flashinfer::PosEncodingMode::kNone, Variant, Params>(
          float_bytes, int_bytes, indptr_h, batch, n_heads, kPageSize, /*enable_cuda_graph=*/false, s, estimate);
    } else {
      status = flashinfer::DecodePlan<D, flashinfer::PosEncodingMode::kNone, Variant, Params>(
          float_ws.ptr, float_ws.size, int_ws.ptr, int_host.ptr, int_ws.size, info, indptr_h, batch, n_heads,
          kPageSize, /*enable_cuda_graph=*/false, s, estimate);
    }
  });
  return status;
}

}  // namespace

struct BatchDecode::State {
  int n_heads, n_kv_heads, head_dim;
  std::vector<int> kv_lens, first_page;
  int n_new = 0;
  // Page table on the device, one int32 array: indptr [B + 1], indices [pages],
  // last_page_len [B], append batch indices [B n_new], append positions [B n_new].
  Bytes table{false};
  std::size_t indptr_at = 0, indices_at = 0, last_len_at = 0, batch_idx_at = 0, pos_at = 0;
  Bytes float_ws{false}, int_ws{false}, int_host{true};
  flashinfer::DecodePlanInfo info;
  DecodePlanSummary summary;

  IdType* table_at(std::size_t at) const { return static_cast<IdType*>(table.ptr) + at; }
  PagedKvT paged(const PagedKv& c) const {
    return PagedKvT(n_kv_heads, kPageSize, head_dim, static_cast<std::uint32_t>(kv_lens.size()),
                    flashinfer::QKVLayout::kNHD, c.k, c.v, table_at(indices_at), table_at(indptr_at),
                    table_at(last_len_at));
  }
};

PageTable page_table(const std::vector<int>& kv_lens, const std::vector<int>& first_page, int n_new) {
  const std::size_t B = kv_lens.size();
  if (B == 0 || first_page.size() != B || n_new < 1) {
    throw std::invalid_argument("FlashInfer page table: needs one first page per sequence and n_new >= 1");
  }
  PageTable t;
  t.indptr.assign(B + 1, 0);
  t.last_page_len.resize(B);
  for (std::size_t b = 0; b < B; ++b) {
    if (kv_lens[b] < n_new || first_page[b] < 0) {
      throw std::invalid_argument("FlashInfer page table: sequence " + std::to_string(b) + " has " +
                                  std::to_string(kv_lens[b]) + " keys for " + std::to_string(n_new) +
                                  " new rows (first page " + std::to_string(first_page[b]) + ")");
    }
    const int pages = (kv_lens[b] + kPageSize - 1) / kPageSize;
    t.indptr[b + 1] = t.indptr[b] + pages;
    for (int p = 0; p < pages; ++p) t.indices.push_back(first_page[b] + p);
    t.last_page_len[b] = kv_lens[b] - (pages - 1) * kPageSize;
    for (int i = 0; i < n_new; ++i) {
      t.batch_indices.push_back(static_cast<IdType>(b));
      t.positions.push_back(kv_lens[b] - n_new + i);
    }
  }
  return t;
}

BatchDecode::BatchDecode(int n_heads, int n_kv_heads, int head_dim) : st_(std::make_unique<State>()) {
  if (n_kv_heads < 1 || n_heads % n_kv_heads != 0 || !group_size_supported(n_heads / n_kv_heads) ||
      !head_dim_supported(head_dim)) {
    throw std::invalid_argument("FlashInfer batch decode: unsupported shape heads " + std::to_string(n_heads) + "/" +
                                std::to_string(n_kv_heads) + ", head_dim " + std::to_string(head_dim));
  }
  st_->n_heads = n_heads, st_->n_kv_heads = n_kv_heads, st_->head_dim = head_dim;
}

BatchDecode::~BatchDecode() = default;

bool BatchDecode::planned_for(const std::vector<int>& kv_lens, const std::vector<int>& first_page, int n_new) const {
  return st_->n_new == n_new && st_->kv_lens == kv_lens && st_->first_page == first_page;
}

DecodePlanSummary BatchDecode::summary() const { return st_->summary; }

void BatchDecode::plan(const std::vector<int>& kv_lens, const std::vector<int>& first_page, int n_new,
                       cudaStream_t s) {
  State& st = *st_;
  const PageTable t = page_table(kv_lens, first_page, n_new);
  // The previous plan's copy of the page-locked buffer may still be queued.
  cuda_ok(cudaStreamSynchronize(s), "FlashInfer batch decode plan: synchronize");
  std::vector<IdType> table;
  auto put = [&](const std::vector<IdType>& part) {
    const std::size_t at = table.size();
    table.insert(table.end(), part.begin(), part.end());
    return at;
  };
  st.indptr_at = put(t.indptr), st.indices_at = put(t.indices), st.last_len_at = put(t.last_page_len);
  st.batch_idx_at = put(t.batch_indices), st.pos_at = put(t.positions);
  st.table.grow(table.size() * sizeof(IdType));
  cuda_ok(cudaMemcpyAsync(st.table.ptr, table.data(), table.size() * sizeof(IdType), cudaMemcpyHostToDevice, s),
          "FlashInfer batch decode plan: page table upload");
  // A pageable source: the copy has left `table` when this returns.
  cuda_ok(cudaStreamSynchronize(s), "FlashInfer batch decode plan: synchronize");
  std::vector<IdType> indptr = t.indptr;  // DecodePlan takes a mutable host pointer
  const std::size_t B = kv_lens.size();

  // DecodePlan reads the host indptr; it sizes, then fills, the workspaces.
  const int group = st.n_heads / st.n_kv_heads;
  const auto n_heads = static_cast<std::uint32_t>(st.n_heads);
  const auto batch = static_cast<std::uint32_t>(B);
  std::size_t float_bytes = 0, int_bytes = 0;
  auto call = [&](bool count_only) {
    return st.head_dim == 64
               ? work_estimation_and_plan<64>(group, count_only, float_bytes, int_bytes, st.float_ws, st.int_ws,
                                              st.int_host, st.info, indptr.data(), batch, n_heads, s)
               : work_estimation_and_plan<128>(group, count_only, float_bytes, int_bytes, st.float_ws, st.int_ws,
                                               st.int_host, st.info, indptr.data(), batch, n_heads, s);
  };
  checked("DecodePlanWorkspaceSize", [&] { return call(true); });
  // 16 bytes of slack per buffer: the counting pass assumes aligned bases, cudaMalloc's are.
  st.float_ws.grow(std::max<std::size_t>(float_bytes, 16));
  st.int_ws.grow(int_bytes + 16);
  st.int_host.grow(int_bytes + 16);
  checked("DecodePlan", [&] { return call(false); });
  // The chunk as the plan wrote it into the page-locked copy of its int workspace.
  const IdType chunk_tokens = *reinterpret_cast<const IdType*>(static_cast<const char*>(st.int_host.ptr) +
                                                               st.info.kv_chunk_size_ptr_offset);
  st.summary = {st.info.split_kv, chunk_tokens, static_cast<int>(st.info.padded_batch_size)};
  st.kv_lens = kv_lens, st.first_page = first_page, st.n_new = n_new;
}

void BatchDecode::append(const PagedKv& cache, const bf16* k, std::size_t k_stride, const bf16* v,
                         std::size_t v_stride, cudaStream_t s) const {
  const State& st = *st_;
  if (st.kv_lens.empty()) throw std::logic_error("FlashInfer AppendPagedKVCache: append() before plan()");
  const auto nnz = static_cast<std::uint32_t>(st.kv_lens.size() * st.n_new);
  checked("AppendPagedKVCache", [&] {
    return flashinfer::AppendPagedKVCache<bf16, IdType>(st.paged(cache), const_cast<bf16*>(k), const_cast<bf16*>(v),
                                                        st.table_at(st.batch_idx_at), st.table_at(st.pos_at), nnz,
                                                        k_stride, st.head_dim, v_stride, st.head_dim, s);
  });
}

namespace {
template <int D>
cudaError_t batch_decode(Params& p, bf16* tmp_v, float* tmp_s, cudaStream_t s) {
  return flashinfer::BatchDecodeWithPagedKVCacheDispatched<D, flashinfer::PosEncodingMode::kNone, Variant>(
      p, tmp_v, tmp_s, /*enable_pdl=*/false, s);
}
}  // namespace

void BatchDecode::run(const PagedKv& cache, const bf16* q, bf16* out, float sm_scale, cudaStream_t s) const {
  const State& st = *st_;
  if (st.kv_lens.empty()) throw std::logic_error("FlashInfer BatchDecodeWithPagedKVCache: run() before plan()");
  const IdType row = st.n_heads * st.head_dim;
  Params p(const_cast<bf16*>(q), /*q_rope_offset=*/nullptr, st.paged(cache), out, /*lse=*/nullptr,
           /*maybe_alibi_slopes=*/nullptr, st.n_heads, /*q_stride_n=*/row, /*q_stride_h=*/st.head_dim,
           /*window_left=*/-1, /*logits_soft_cap=*/0.0f, sm_scale, /*rope_scale=*/1.0f, /*rope_theta=*/1e4f);
  char* int_base = static_cast<char*>(st.int_ws.ptr);
  p.request_indices = reinterpret_cast<IdType*>(int_base + st.info.request_indices_offset);
  p.kv_tile_indices = reinterpret_cast<IdType*>(int_base + st.info.kv_tile_indices_offset);
  p.o_indptr = reinterpret_cast<IdType*>(int_base + st.info.o_indptr_offset);
  p.kv_chunk_size_ptr = reinterpret_cast<IdType*>(int_base + st.info.kv_chunk_size_ptr_offset);
  p.padded_batch_size = static_cast<std::uint32_t>(st.info.padded_batch_size);
  bf16* tmp_v = nullptr;
  float* tmp_s = nullptr;
  if (st.info.split_kv) {
    // As FlashInfer's binding: the partial outputs are DTypeO (bf16) in a float-sized slot.
    tmp_v = reinterpret_cast<bf16*>(static_cast<char*>(st.float_ws.ptr) + st.info.v_offset);
    tmp_s = reinterpret_cast<float*>(static_cast<char*>(st.float_ws.ptr) + st.info.s_offset);
  }
  checked("BatchDecodeWithPagedKVCache", [&] {
    return st.head_dim == 64 ? batch_decode<64>(p, tmp_v, tmp_s, s) : batch_decode<128>(p, tmp_v, tmp_s, s);
  });
}

}  // namespace fusecheck::flashinfer_ops
