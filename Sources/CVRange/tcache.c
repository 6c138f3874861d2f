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
#include <time.h>
#include <unistd.h>

__thread vr_tcache *vr_tcache_current __attribute__((tls_model("initial-exec")));
static __thread int retired;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static vr_tcache *registry;            // under registry_lock
static _Atomic int barrier_state;      // 0: unknown, 1: registered, -1: unavailable
static _Atomic uint64_t barriers;
// Entries taken by drains and exiting threads, and caches gone: changed
// under registry_lock (vr_tcache_unchanged).
static _Atomic uint64_t moves;

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
  atomic_compare_exchange_strong(&barrier_state, &expected, ok ? 1 : -1);
  return atomic_load(&barrier_state) > 0;
}

// At load, never lazily: a registration racing fork() waits for it while
// its caller may hold a lock fork()'s prepare waits for (atfork.c).
__attribute__((constructor)) static void tcache_register_at_fork(void) {
  vr_atfork_register(VR_FORK_THREAD_CACHES, at_fork_prepare, at_fork_parent, at_fork_child);
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
  atomic_fetch_add(&moves, 1);
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
        unlink_cache(c);  // counted in moves by take_entries
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
  take_entries(c, 0, sink, context);  // counts in moves: the cache goes away
  unlink_cache(c);
  pthread_mutex_unlock(&registry_lock);
  free(c);
}

// Under the lock: the sum of the live caches' sequence numbers (orphans
// change only by drains, counted in moves), and whether one is odd.
static uint64_t seq_sum(int *inside) {
  uint64_t sum = 0;
  for (vr_tcache *c = registry; c; c = c->next) {
    if (c->orphan) continue;
    uint64_t s = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE);
    if (s & 1) *inside = 1;
    sum += s;
  }
  return sum;
}

// Statistics' census. Under the lock no drain or exit moves entries; an
// owner's fast path moves them without it, and says so in its seq (odd
// inside, before any change). A census and a later vr_tcache_unchanged
// with the same moves and the same sum (sequence numbers only grow; a cache
// that goes away counts in moves) saw no entry move in between.
int vr_tcache_census(uint64_t token, uint64_t *spans, uint64_t *pages, uint64_t ticket[2]) {
  uint64_t n = 0, p = 0;
  *spans = 0;
  *pages = 0;
  ticket[0] = ticket[1] = 0;
  if (token == 0) return 1;
  pthread_mutex_lock(&registry_lock);
  int inside = 0;
  ticket[0] = atomic_load(&moves);
  ticket[1] = seq_sum(&inside);
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
  return !inside;
}

int vr_tcache_unchanged(const uint64_t ticket[2]) {
  // The caller's reads (of magazines, under arenas' locks) come before the
  // sequence numbers': an entry change they saw shows here.
  atomic_thread_fence(memory_order_seq_cst);
  pthread_mutex_lock(&registry_lock);
  int inside = 0;
  int same = atomic_load(&moves) == ticket[0] && seq_sum(&inside) == ticket[1] && !inside;
  pthread_mutex_unlock(&registry_lock);
  return same;
}

uint64_t vr_tcache_barriers(void) { return atomic_load(&barriers); }

// MARK: - The allocator's registry: every arena's lock at fork, the release clock
//
// Lock order (the at-fork prepare handler takes them so, at layer
// VR_FORK_ALLOCATOR): alloc_lock, then every arena's lock in list order (an
// arena's lock is never held while alloc_lock or another arena's lock is
// taken). The slab page words' busy bits are not waited for: a busy word
// carries the fork generation it was set in, and a thread of a later
// generation (a fork child's) finishes the transition its dead owner began
// (Segment.recoverStaleBusy).

// The release clock's thread holds `releaser_gate` whenever it runs, and
// releases it only while it waits for its next round (vr_alloc_wait). The
// prepare handler takes it first: fork() never copies that thread while it
// runs Swift code (the Swift runtime's locks, taken when a type is first
// used, have no at-fork handler: a child forked while it held one would
// hang at its own next first use of such a type).
static pthread_mutex_t releaser_gate = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t alloc_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t alloc_cond;
static pthread_once_t alloc_once = PTHREAD_ONCE_INIT;
static vr_alloc_link *alloc_arenas;  // under alloc_lock
static int releaser_started;         // under alloc_lock
uint32_t vr_alloc_generation_word;   // atomic accesses only

static void init_cond(void) {
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&alloc_cond, &attr);
  pthread_condattr_destroy(&attr);
}

static void alloc_prepare(void) {
  VR_HOOK(VR_HOOK_ALLOC_FORK_PREPARE, 0);
  pthread_mutex_lock(&releaser_gate);
  pthread_mutex_lock(&alloc_lock);
  for (vr_alloc_link *l = alloc_arenas; l; l = l->next) pthread_mutex_lock(l->mutex);
}

static void alloc_parent(void) {
  for (vr_alloc_link *l = alloc_arenas; l; l = l->next) pthread_mutex_unlock(l->mutex);
  pthread_mutex_unlock(&alloc_lock);
  pthread_mutex_unlock(&releaser_gate);
}

// One thread: the forking one, which holds every lock. Busy bits set before
// the fork become stale (new generation); the release clock's thread is gone
// and no arena counts as scheduled (a child starts no clock: ReleaseClock.swift).
static void alloc_child(void) {
  __atomic_add_fetch(&vr_alloc_generation_word, 1, __ATOMIC_RELAXED);
  for (vr_alloc_link *l = alloc_arenas; l; l = l->next) {
    if (l->release_flag) __atomic_store_n(l->release_flag, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(l->mutex);
  }
  releaser_started = 0;
  init_cond();  // a waiter of the parent's may be recorded in it
  pthread_mutex_unlock(&alloc_lock);
  pthread_mutex_unlock(&releaser_gate);
}

static void alloc_init(void) {
  init_cond();
  vr_atfork_register(VR_FORK_ALLOCATOR, alloc_prepare, alloc_parent, alloc_child);
}

// At load (see tcache_register_at_fork): the first arena, linked under a
// cache's shard mutex, no longer registers racing a fork.
__attribute__((constructor)) static void alloc_register_at_fork(void) { pthread_once(&alloc_once, alloc_init); }

void vr_alloc_link_arena(vr_alloc_link *l) {
  pthread_once(&alloc_once, alloc_init);
  pthread_mutex_lock(&alloc_lock);
  l->prev = NULL;
  l->next = alloc_arenas;
  if (alloc_arenas) alloc_arenas->prev = l;
  alloc_arenas = l;
  pthread_mutex_unlock(&alloc_lock);
}

void vr_alloc_unlink_arena(vr_alloc_link *l) {
  pthread_mutex_lock(&alloc_lock);
  if (l->prev) l->prev->next = l->next; else alloc_arenas = l->next;
  if (l->next) l->next->prev = l->prev;
  l->prev = l->next = NULL;
  pthread_mutex_unlock(&alloc_lock);
}

void vr_alloc_lock(void) {
  pthread_once(&alloc_once, alloc_init);
  pthread_mutex_lock(&alloc_lock);
}

void vr_alloc_unlock(void) { pthread_mutex_unlock(&alloc_lock); }

void vr_alloc_releaser_enter(void) {
  pthread_once(&alloc_once, alloc_init);
  pthread_mutex_lock(&releaser_gate);
  pthread_mutex_lock(&alloc_lock);
}

// The gate is free for the wait only; taken again before the lock (the
// prepare handler's order), so the lock is dropped and retaken after it.
void vr_alloc_wait(uint64_t deadline_ns) {
  pthread_mutex_unlock(&releaser_gate);
  if (deadline_ns == 0) {
    pthread_cond_wait(&alloc_cond, &alloc_lock);
  } else {
    struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000u), .tv_nsec = (long)(deadline_ns % 1000000000u)};
    pthread_cond_timedwait(&alloc_cond, &alloc_lock, &ts);
  }
  pthread_mutex_unlock(&alloc_lock);
  pthread_mutex_lock(&releaser_gate);
  pthread_mutex_lock(&alloc_lock);
}

void vr_alloc_wake(void) { pthread_cond_signal(&alloc_cond); }

int vr_alloc_claim_releaser(void) {
  if (releaser_started) return 0;
  releaser_started = 1;
  return 1;
}

void vr_alloc_releaser_failed(void) { releaser_started = 0; }
