// Overlap check by sorting the tensors' byte ranges.
#include "harness/checkpoint/view_checks.h"

#include <algorithm>
#include <functional>

#include <fmt/core.h>

#include "harness/core/error.h"
#include "harness/core/untrusted.h"

namespace fusecheck {

void check_no_overlap(const std::vector<TensorView>& tensors, const std::string& file) {
  std::vector<const TensorView*> order;
  for (const TensorView& t : tensors) {
    if (!t.bytes.empty()) order.push_back(&t);  // zero-sized tensors overlap nothing
  }
  const std::less<const std::byte*> before;
  std::sort(order.begin(), order.end(),
            [&](const TensorView* a, const TensorView* b) { return before(a->bytes.data(), b->bytes.data()); });
  for (std::size_t i = 1; i < order.size(); ++i) {
    const TensorView& prev = *order[i - 1];
    if (before(order[i]->bytes.data(), prev.bytes.data() + prev.bytes.size())) {
      throw InputError(fmt::format("{}: tensor '{}'", file, order[i]->name),
                       fmt::format("data overlaps that of tensor '{}'", prev.name));
    }
  }
}

namespace {

// Checkpoint text in an error: escaped and bounded (harness/core/untrusted.h).
std::string printable(const std::string& text) { return fusecheck::printable(text, 2000); }

}  // namespace

void rethrow_printable(const InputError& e) {
  const std::string what = e.what();
  const std::string& where = e.where();
  const std::string problem = where.empty() ? what : what.substr(std::min(what.size(), where.size() + 2));
  throw InputError(printable(where), printable(problem));
}

}  // namespace fusecheck
