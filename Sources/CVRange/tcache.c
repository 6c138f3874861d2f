// Per-thread span caches: creation, the registry, drains and the fork child
// (see vr_tcache.h for the handshake).
#include "internal.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

__thread vr_tcache *vr_tcache_current __attribute__((tls_model("initial-exec")));
static __thread int retired;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static vr_tcache *registry;            // under registry_lock
static _Atomic int barrier_state;      // 0: unknown, 1: registered, -1: unavailable
static _Atomic uint64_t barriers;

static long membarrier(int cmd) { return syscall(__NR_membarrier, cmd, 0, 0); }

static void at_fork_prepare(void) { pthread_mutex_lock(&registry_lock); }
static void at_fork_parent(void) { pthread_mutex_unlock(&registry_lock); }
// The child has one thread: every other cache's owner is gone, perhaps in
// the middle of its fast path (active stuck). Those caches become
// orphans: drains take their entries without a handshake and free them.
static void at_fork_child(void) {
  for (vr_tcache *c = registry; c; c = c->next) {
    if (c != vr_tcache_current) c->orphan = 1;
  }
  pthread_mutex_unlock(&registry_lock);
}

static int barrier_available(void) {
  int s = atomic_load(&barrier_state);
  if (s != 0) return s > 0;
  int ok = membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
  int expected = 0;
  if (atomic_compare_exchange_strong(&barrier_state, &expected, ok ? 1 : -1) && ok) {
    vr_atfork_register(VR_FORK_THREAD_CACHES, at_fork_prepare, at_fork_parent, at_fork_child);
  }
  return atomic_load(&barrier_state) > 0;
}

vr_tcache *vr_tcache_create(void) {
  if (vr_tcache_current) return vr_tcache_current;
  if (retired || !barrier_available()) return NULL;
  vr_tcache *c = aligned_alloc(64, (sizeof(vr_tcache) + 63) & ~(size_t)63);
  if (!c) return NULL;
  memset(c, 0, sizeof *c);
  pthread_mutex_lock(&registry_lock);
  c->next = registry;
  if (registry) registry->prev = c;
  registry = c;
  pthread_mutex_unlock(&registry_lock);
  vr_tcache_current = c;
  return c;
}

// Under the lock.
static void unlink_cache(vr_tcache *c) {
  if (c->prev) c->prev->next = c->next; else registry = c->next;
  if (c->next) c->next->prev = c->prev;
}

// Under the lock, with the owner out: hands over the entries of `token`
// (0: all). Returns how many remain.
static int take_entries(vr_tcache *c, uint64_t token, vr_tcache_sink sink, void *context) {
  int left = 0;
  for (int i = 0; i < VR_TCACHE_ENTRIES; i++) {
    uint64_t t = __atomic_load_n(&c->token[i], __ATOMIC_ACQUIRE);
    if (t == 0) continue;
    if (token != 0 && t != token) { left++; continue; }
    sink(context, t, __atomic_load_n(&c->segment[i], __ATOMIC_RELAXED),
         __atomic_load_n(&c->span[i], __ATOMIC_RELAXED));
    __atomic_store_n(&c->token[i], 0, __ATOMIC_RELAXED);
  }
  return left;
}

static int full_barrier(void) {
  atomic_fetch_add(&barriers, 1);
  if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return 0;
  int e = errno;
  // Not registered in this process (should not happen: registration is
  // inherited by a fork child): register and try once more.
  if (e == EPERM && membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0 &&
      membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return 0;
  // Any other failure (ENOMEM for the CPU mask): the global command needs
  // no registration and no allocation; it is slow (an RCU grace period)
  // but gives the same guarantee.
  if (membarrier(MEMBARRIER_CMD_GLOBAL) == 0) return 0;
  return errno ? errno : e;
}

// Under the lock: whether `c` holds a span of `token` (a racy look: the
// owner may be taking one meanwhile; a put after it is not this drain's).
static int holds(vr_tcache *c, uint64_t token) {
  for (int i = 0; i < VR_TCACHE_ENTRIES; i++) {
    if (__atomic_load_n(&c->token[i], __ATOMIC_RELAXED) == token) return 1;
  }
  return 0;
}

// Under the lock: waits until the owner of `c` is out of its fast path
// (a few instructions, unless it was preempted there): any fast path when
// `token` is 0, else one for allocator `token`.
static void wait_out(vr_tcache *c, uint64_t token) {
  for (;;) {
    uint64_t active = __atomic_load_n(&c->active, __ATOMIC_ACQUIRE);
    if (active == 0 || (token != 0 && active != token)) return;
    sched_yield();
  }
}

int vr_tcache_drain(uint64_t token, int closing, vr_tcache_sink sink, void *context) {
  if (token == 0) return EINVAL;
  pthread_mutex_lock(&registry_lock);
  if (closing) {
    // The allocator's arenas are closed: after this barrier no put of
    // `token` succeeds (vr_tcache_put reads the closed word inside the
    // handshake). Its puts already inside finish before the look below;
    // owners busy with other allocators are not waited for.
    int e = full_barrier();
    if (e != 0) {
      pthread_mutex_unlock(&registry_lock);
      return e;
    }
    for (vr_tcache *c = registry; c; c = c->next) {
      if (!c->orphan) wait_out(c, token);
    }
  }
  // Only the caches that hold spans of `token` are stopped: the owners of
  // the others never notice the drain.
  int flagged = 0;
  for (vr_tcache *c = registry; c; c = c->next) {
    if (c->orphan || !holds(c, token)) continue;
    c->flagged = 1;
    __atomic_store_n(&c->drain, 1, __ATOMIC_RELAXED);
    flagged++;
  }
  if (flagged > 0) {
    int e = full_barrier();
    if (e != 0) {
      for (vr_tcache *c = registry; c; c = c->next) {
        if (c->flagged) __atomic_store_n(&c->drain, 0, __ATOMIC_RELEASE);
        c->flagged = 0;
      }
      pthread_mutex_unlock(&registry_lock);
      return e;
    }
    VR_HOOK(VR_HOOK_TCACHE_DRAIN_FLAGGED, token);
  }
  vr_tcache *c = registry;
  while (c) {
    vr_tcache *next = c->next;
    if (c->orphan) {
      if (take_entries(c, token, sink, context) == 0) {
        unlink_cache(c);
        free(c);
      }
    } else if (c->flagged) {
      // The owner may be inside its fast path (it entered before the
      // barrier); after it leaves, it stays out until drain is 0.
      wait_out(c, 0);
      take_entries(c, token, sink, context);
      c->flagged = 0;
      __atomic_store_n(&c->drain, 0, __ATOMIC_RELEASE);
    }
    c = next;
  }
  pthread_mutex_unlock(&registry_lock);
  return 0;
}

void vr_tcache_retire(vr_tcache_sink sink, void *context) {
  retired = 1;
  vr_tcache *c = vr_tcache_current;
  if (!c) return;
  vr_tcache_current = NULL;
  // Drainers hold the lock for their whole pass: under it, nobody else
  // touches this cache.
  pthread_mutex_lock(&registry_lock);
  take_entries(c, 0, sink, context);
  unlink_cache(c);
  pthread_mutex_unlock(&registry_lock);
  free(c);
}

void vr_tcache_census(uint64_t token, uint64_t *spans, uint64_t *pages) {
  uint64_t n = 0, p = 0;
  *spans = 0;
  *pages = 0;
  if (token == 0) return;
  pthread_mutex_lock(&registry_lock);
  for (vr_tcache *c = registry; c; c = c->next) {
    for (int i = 0; i < VR_TCACHE_ENTRIES; i++) {
      if (__atomic_load_n(&c->token[i], __ATOMIC_RELAXED) != token) continue;
      n++;
      p += __atomic_load_n(&c->span[i], __ATOMIC_RELAXED) & 0xFFFF;
    }
  }
  pthread_mutex_unlock(&registry_lock);
  *spans = n;
  *pages = p;
}

uint64_t vr_tcache_barriers(void) { return atomic_load(&barriers); }
