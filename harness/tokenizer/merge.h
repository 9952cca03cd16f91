// The merge loop both vocabulary models share: start from one symbol per character, then
// repeatedly join the adjacent pair with the best priority (lowest; the leftmost on ties)
// until no adjacent pair may join. BPE ranks a pair by its merge's position in the list;
// SentencePiece (llama.cpp) by the score of the joined piece. O(n log n) with a heap whose
// stale entries are skipped when popped.
#pragma once

#include <cstdint>
#include <optional>
#include <queue>
#include <vector>

namespace fusecheck::tok {

struct Symbol {
  std::uint32_t begin = 0;  // byte offset in the piece
  std::uint32_t len = 0;    // bytes; 0 once joined into its left neighbour
  std::int32_t id = -1;     // vocabulary id; -1 for a character the vocabulary lacks
};

struct PairMerge {
  double priority = 0;      // lower joins first
  std::int32_t merged = 0;  // id of the joined piece
};

// `join(left, right)` returns the merge for two adjacent symbols, or nullopt when they
// may not join. `symbols` keeps its order; joined-away symbols get len 0.
template <class Join>
void merge_symbols(std::vector<Symbol>& symbols, Join&& join) {
  const int n = static_cast<int>(symbols.size());
  if (n < 2) return;
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    double priority;
    int left, right;
    std::uint32_t len;  // both symbols' length when queued: a changed length means stale
    std::int32_t merged;
    bool operator>(const Candidate& o) const {
      return priority > o.priority || (priority == o.priority && left > o.left);
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto consider = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    if (const std::optional<PairMerge> m = join(symbols[left], symbols[right])) {
      queue.push({m->priority, left, right, symbols[left].len + symbols[right].len, m->merged});
    }
  };
  for (int i = 0; i + 1 < n; ++i) consider(i, i + 1);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& l = symbols[c.left];
    Symbol& r = symbols[c.right];
    if (l.len == 0 || r.len == 0 || next[c.left] != c.right || l.len + r.len != c.len) continue;
    l.len += r.len;
    l.id = c.merged;
    r.len = 0;
    next[c.left] = next[c.right];
    if (next[c.right] >= 0) prev[next[c.right]] = c.left;
    consider(prev[c.left], c.left);
    consider(c.left, next[c.left]);
  }
}

}  // namespace fusecheck::tok
