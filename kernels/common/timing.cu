// CUDA-event timing helpers.
#include "kernels/common/timing.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "kernels/common/stream.h"

namespace fusecheck::cuda {

namespace {
__global__ void spin_kernel(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}
}  // namespace

void enqueue_delay(cudaStream_t stream, double microseconds) {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  // The clock rate is queried once per device: this runs before every timed repetition.
  static thread_local int cached_dev = -1, khz = 0;
  if (dev != cached_dev) {
    CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, dev));
    cached_dev = dev;
  }
  spin_kernel<<<1, 1, 0, stream>>>(static_cast<long long>(microseconds * khz / 1000.0));
  CUDA_CHECK_LAUNCH();
}

L2Flusher::L2Flusher(std::size_t l2_bytes) : scratch_(std::max<std::size_t>(2 * l2_bytes, 1 << 20)) {}

void L2Flusher::flush(cudaStream_t s) {
  CUDA_CHECK(cudaMemsetAsync(scratch_.data(), 0x3C, scratch_.bytes(), s));
}

TimingStats summarize_ms(std::vector<float>& ms) {
  if (ms.empty()) throw std::logic_error("summarize_ms: no repetitions");
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) {
    const auto i = static_cast<std::size_t>(std::lround(q * static_cast<double>(ms.size() - 1)));
    return static_cast<double>(ms[i]);
  };
  TimingStats t;
  t.median_ms = ms.size() % 2 ? ms[ms.size() / 2]
                              : 0.5 * (static_cast<double>(ms[ms.size() / 2 - 1]) + ms[ms.size() / 2]);
  t.p10_ms = at(0.1);
  t.p90_ms = at(0.9);
  t.repetitions = static_cast<int>(ms.size());
  return t;
}

namespace {
// A host-side gate in a stream (nvbench's "blocking kernel" idea, done with a host
// function so that it needs no mapped host memory): work queued behind it waits until
// open() or the timeout, whichever comes first. The timeout only guards against a full
// launch queue (the host would block in a launch and never open the gate).
struct HostGate {
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  bool timed_out = false;
  static void CUDART_CB wait(void* self) {
    auto* g = static_cast<HostGate*>(self);
    std::unique_lock lock(g->m);
    if (!g->cv.wait_for(lock, std::chrono::seconds(2), [g] { return g->open; })) g->timed_out = true;
  }
  void release() {
    {
      std::lock_guard lock(m);
      open = true;
    }
    cv.notify_all();
  }
};
}  // namespace

TimingStats time_on_stream(const std::function<void(cudaStream_t)>& work, cudaStream_t stream,
                           int warmup, int repetitions, L2Flusher* flusher) {
  if (repetitions <= 0) throw std::invalid_argument("time_on_stream: repetitions must be positive");
  for (int i = 0; i < warmup; ++i) work(stream);
  // Every repetition is queued behind one closed gate, with its own pair of events, and
  // read back after one synchronization; the gate opens once all are queued, so the GPU
  // runs the repetitions back to back and no start event waits on the host's launches
  // (a per-repetition spin kernel did this before, at 20 us a repetition). The warm-up
  // runs while the host queues. A host round trip per repetition would cost more than
  // most ops.
  auto gate = std::make_unique<HostGate>();
  CUDA_CHECK(cudaLaunchHostFunc(stream, &HostGate::wait, gate.get()));
  // Events are kept per thread and device and reused: a run times thousands of op lists,
  // and creating and destroying 2 x repetitions events for each cost more than the gate.
  thread_local std::map<int, std::vector<Event>> pools;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  std::vector<Event>& pool = pools[device];
  while (pool.size() < 2 * static_cast<std::size_t>(repetitions)) pool.emplace_back();
  Event* start = pool.data();
  Event* stop = pool.data() + repetitions;
  try {
    for (int i = 0; i < repetitions; ++i) {
      if (flusher) flusher->flush(stream);
      start[static_cast<std::size_t>(i)].record(stream);
      work(stream);
      stop[static_cast<std::size_t>(i)].record(stream);
    }
  } catch (...) {
    gate->release();
    cudaStreamSynchronize(stream);  // the gate must not outlive its host function
    throw;
  }
  gate->release();
  CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<float> ms;
  ms.reserve(static_cast<std::size_t>(repetitions));
  for (int i = 0; i < repetitions; ++i)
    ms.push_back(elapsed_ms(start[static_cast<std::size_t>(i)], stop[static_cast<std::size_t>(i)]));
  TimingStats t = summarize_ms(ms);
  t.gate_timed_out = gate->timed_out;
  return t;
}

}  // namespace fusecheck::cuda
