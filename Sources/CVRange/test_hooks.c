// Test-only interleaving hooks. The library fires a point at each critical
// window (VR_HOOK in internal.h, vr_test_hook_fire from Swift); in debug
// builds the armed rules run there: yield, publish flags, wait for flags.
// Everything here is async-signal-safe (the handler fires points too): rules
// live in static memory, flags in one atomic word, waits spin with
// sched_yield against a CLOCK_MONOTONIC deadline. In release builds the
// points are compiled out and arming a rule has no effect.
#include "internal.h"

#include <sched.h>
#include <time.h>

enum { RULES = 16 };

// Every field is atomic: a rule is re-armed while other threads may be
// reading it (relaxed loads; the seq_cst store of `point` publishes it).
typedef struct {
  _Atomic int point;  // 0: unused
  _Atomic uintptr_t arg;
  _Atomic pid_t tid;
  _Atomic int yields;
  _Atomic uint64_t set_flags;
  _Atomic uint64_t wait_any;
  _Atomic int deadline_ms;
  _Atomic int times;
} hook_rule;

static hook_rule rules[RULES];
static _Atomic uint64_t flags;
static _Atomic uint64_t counts[VR_HOOK_POINTS];
static _Atomic uint64_t timeouts;

int vr_test_hooks_available(void) {
#ifdef VR_TEST_HOOKS
  return 1;
#else
  return 0;
#endif
}

void vr_test_hook_arm(int index, int point, uintptr_t arg, pid_t tid, int yields,
                      uint64_t set_flags, uint64_t wait_any, int deadline_ms, int times) {
  if (index < 0 || index >= RULES) return;
  hook_rule *r = &rules[index];
  atomic_store(&r->point, 0);
  atomic_store_explicit(&r->arg, arg, memory_order_relaxed);
  atomic_store_explicit(&r->tid, tid, memory_order_relaxed);
  atomic_store_explicit(&r->yields, yields, memory_order_relaxed);
  atomic_store_explicit(&r->set_flags, set_flags, memory_order_relaxed);
  atomic_store_explicit(&r->wait_any, wait_any, memory_order_relaxed);
  atomic_store_explicit(&r->deadline_ms, deadline_ms, memory_order_relaxed);
  atomic_store(&r->times, times);
  atomic_store(&r->point, point);  // seq_cst: publishes the rule
}

void vr_test_hook_reset(void) {
  for (int i = 0; i < RULES; i++) atomic_store(&rules[i].point, 0);
  atomic_store(&flags, 0);
  atomic_store(&timeouts, 0);
  for (int i = 0; i < VR_HOOK_POINTS; i++) atomic_store(&counts[i], 0);
}

uint64_t vr_test_hook_flags(void) { return atomic_load(&flags); }
void vr_test_hook_set_flags(uint64_t f) { atomic_fetch_or(&flags, f); }
uint64_t vr_test_hook_count(int point) {
  return point > 0 && point < VR_HOOK_POINTS ? atomic_load(&counts[point]) : 0;
}
uint64_t vr_test_hook_timeouts(void) { return atomic_load(&timeouts); }

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void vr_test_hook_fire(int point, uintptr_t arg) {
  if (point <= 0 || point >= VR_HOOK_POINTS) return;
  atomic_fetch_add(&counts[point], 1);
  pid_t tid = 0;
  for (int i = 0; i < RULES; i++) {
    hook_rule *r = &rules[i];
    if (atomic_load(&r->point) != point) continue;
    uintptr_t want = atomic_load_explicit(&r->arg, memory_order_relaxed);
    if (want != 0 && want != arg) continue;
    pid_t only = atomic_load_explicit(&r->tid, memory_order_relaxed);
    if (only != 0) {
      if (tid == 0) tid = vr_gettid();
      if (only != tid) continue;
    }
    int left = atomic_load(&r->times);
    for (;;) {
      if (left == 0) break;
      if (left < 0 || atomic_compare_exchange_weak(&r->times, &left, left - 1)) break;
    }
    if (left == 0) continue;
    int yields = atomic_load_explicit(&r->yields, memory_order_relaxed);
    uint64_t set = atomic_load_explicit(&r->set_flags, memory_order_relaxed);
    uint64_t wait_any = atomic_load_explicit(&r->wait_any, memory_order_relaxed);
    for (int y = 0; y < yields; y++) sched_yield();
    if (set) atomic_fetch_or(&flags, set);
    if (wait_any) {
      int64_t deadline = now_ms() + atomic_load_explicit(&r->deadline_ms, memory_order_relaxed);
      while (!(atomic_load(&flags) & wait_any)) {
        if (now_ms() > deadline) {
          atomic_fetch_add(&timeouts, 1);
          break;
        }
        sched_yield();
      }
    }
  }
}
