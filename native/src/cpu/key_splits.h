// How the CPU kernel splits a call's keys across tasks (split-K); ISA-independent, so tests can check it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace mixattn {

// Below this many keys per range a split costs more (query load, merge) than it spreads.
inline constexpr int kMinKeysPerSplit = 256;

// Key ranges per task for `units` (sequence, KV head, query block) tasks on `threads` threads when the longest
// visible key range is `keys`. Split only when at most half the threads would have a task: a decode step of one
// sequence with 2 KV heads is 2 units, and without splits 2 cores would read the whole cache while the rest idle.
// Then threads / units ranges (every thread one equal range), but none shorter than kMinKeysPerSplit.
inline int ChooseKeySplits(size_t units, int threads, int64_t keys) {
  if (threads <= 1 || units == 0 || units * 2 > static_cast<size_t>(threads)) return 1;
  const int64_t by_threads = static_cast<int64_t>(threads) / static_cast<int64_t>(units);
  const int64_t by_keys = keys / kMinKeysPerSplit;
  return static_cast<int>(std::max<int64_t>(1, std::min(by_threads, by_keys)));
}

}  // namespace mixattn
