// RAII device memory. DeviceBuffer<T> owns cudaMalloc'd memory; fill_poison() writes a
// NaN-like pattern so that tests can prove every element was written.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "kernels/common/cuda_check.h"

namespace fusecheck::cuda {

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t n) { resize(n); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = std::exchange(o.ptr_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  void resize(std::size_t n) {
    if (n == n_) return;
    release();
    if (n) CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), n * sizeof(T)));
    n_ = n;
  }
  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  std::size_t size() const { return n_; }
  std::size_t bytes() const { return n_ * sizeof(T); }

  void upload(const T* host, std::size_t n, cudaStream_t s = nullptr) {
    resize(n);
    CUDA_CHECK(cudaMemcpyAsync(ptr_, host, n * sizeof(T), cudaMemcpyHostToDevice, s));
  }
  void upload(const std::vector<T>& host, cudaStream_t s = nullptr) { upload(host.data(), host.size(), s); }
  std::vector<T> download(cudaStream_t s = nullptr) const {
    std::vector<T> host(n_);
    if (n_) {
      CUDA_CHECK(cudaMemcpyAsync(host.data(), ptr_, bytes(), cudaMemcpyDeviceToHost, s));
      CUDA_CHECK(cudaStreamSynchronize(s));
    }
    return host;
  }
  // 0xFF bytes: NaN for float, bf16 and fp16, so an unwritten element is detectable.
  void fill_poison(cudaStream_t s = nullptr) {
    if (n_) CUDA_CHECK(cudaMemsetAsync(ptr_, 0xFF, bytes(), s));
  }

 private:
  void release() {
    if (ptr_) CUDA_CHECK_NOTHROW(cudaFree(ptr_));
    ptr_ = nullptr;
    n_ = 0;
  }
  T* ptr_ = nullptr;
  std::size_t n_ = 0;
};

}  // namespace fusecheck::cuda
