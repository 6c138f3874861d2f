// Baselines for the purger's rows (see CBench.h, "Purger baselines").
#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be set by the manifest's cSettings"
#endif
#include "CBench.h"

__attribute__((noinline)) uint64_t cb_cas_pair_stamp_loop(uint64_t *word, const uint64_t *clock, uint64_t *stamp,
                                                          size_t iterations) {
  uint64_t t0 = cb_now_ns();
  for (size_t i = 0; i < iterations; i++) {
    uint64_t now = __atomic_load_n(clock, __ATOMIC_RELAXED);
    if (__atomic_load_n(stamp, __ATOMIC_RELAXED) != now) __atomic_store_n(stamp, now, __ATOMIC_RELAXED);
    uint64_t old = __atomic_load_n(word, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(word, &old, old | 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {}
    old = __atomic_load_n(word, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(word, &old, old & ~(uint64_t)1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {}
  }
  return cb_now_ns() - t0;
}
