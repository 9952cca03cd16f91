// One shared object per (checkpoint, device) while anyone holds it. fusecheck run creates a
// path once per mode (isolated, propagated, the perturbed reference); their device weights
// are identical and the slowest thing to set up, so the built-in GPU paths upload them once
// through this cache. Keyed by the checkpoint's address and file: an entry expires with the
// last holder, so a new checkpoint at a reused address never finds stale weights.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "harness/core/checkpoint.h"

namespace fusecheck {

// Returns the live T for (ckpt, device), or the result of make() (a shared_ptr<const T>)
// stored for the next caller. One cache per T; make() runs under the cache's lock.
template <class T, class Make>
std::shared_ptr<const T> shared_per_checkpoint(const Checkpoint& ckpt, int device, Make&& make) {
  static std::mutex mu;
  static std::map<std::tuple<const Checkpoint*, std::string, int>, std::weak_ptr<const T>> cache;
  const auto key = std::make_tuple(&ckpt, ckpt.path().string(), device);
  std::lock_guard lock(mu);
  if (auto live = cache[key].lock()) return live;
  for (auto it = cache.begin(); it != cache.end();) it = it->second.expired() ? cache.erase(it) : std::next(it);
  std::shared_ptr<const T> made = make();
  cache[key] = made;
  return made;
}

}  // namespace fusecheck
