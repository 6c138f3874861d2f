// Per-thread caches of freed page spans (VolatileAllocator's fastest path).
//
// A thread keeps up to VR_TCACHE_ENTRIES spans it freed while they were
// locked, and its next allocation of the same size and allocator takes one
// back: no lock, no atomic read-modify-write, no fence (glibc's tcache is the
// model). Another thread can still take them away (a purger's snapshot, the
// release of free memory, an allocator's deinit) with an asymmetric
// handshake, as tcmalloc drains its per-CPU caches:
//  - the owner stores active = its allocator's token (a plain store), then
//    reads `drain`; it touches its entries only when `drain` is 0, and
//    stores active = 0 after;
//  - a drainer stores drain = 1 in each cache it needs, calls membarrier(
//    MEMBARRIER_CMD_PRIVATE_EXPEDITED), which runs a full barrier on every
//    thread of the process, then waits for active == 0 in each cache before
//    it takes the entries. After the barrier either the owner's store to
//    active is visible to the drainer (which waits for active = 0) or the
//    owner's read of `drain` comes after it and sees 1 (and the owner stays
//    out). So the owner pays two plain stores and a load, and only the rare
//    drainer pays a system call.
// Caches exist only where membarrier's private expedited command can be
// registered (Linux 4.14); elsewhere vr_tcache_create returns NULL and the
// allocator uses its lock-free magazines (one CAS each way).
#ifndef VR_TCACHE_H
#define VR_TCACHE_H

#include <pthread.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VR_TCACHE_ENTRIES 8

/// One thread's cache. Entries are (token, segment, span): token names the
/// allocator (0: empty), segment is an opaque pointer, span is
/// first page << 16 | pages. Every field is atomic (relaxed loads and
/// stores are plain moves) so that a drainer's reads are not data races.
typedef struct vr_tcache {
  uint64_t active; // the token of the owner's fast path in progress, 0 when out
  uint32_t drain;  // a drainer holds the entries: the owner stays out
  uint32_t victim; // next entry to replace when full (owner only)
  uint16_t orphan;  // its thread is gone (the child of a fork); under the registry lock
  uint16_t flagged; // a drain in progress stopped it; under the registry lock
  uint64_t seq;     // owner only: odd inside a fast path, one more at each enter and leave (statistics' check)
  uint64_t token[VR_TCACHE_ENTRIES];
  uintptr_t segment[VR_TCACHE_ENTRIES];
  uint64_t span[VR_TCACHE_ENTRIES];
  struct vr_tcache *prev, *next;  // the registry, under its lock
} vr_tcache;

/// The calling thread's cache, or NULL (none yet, the thread is exiting,
/// or caches are unavailable).
extern __thread vr_tcache *vr_tcache_current __attribute__((tls_model("initial-exec")));

static inline vr_tcache *vr_tcache_self(void) { return vr_tcache_current; }

/// Owner: enters the fast path for allocator `token` (not 0); 0 when a
/// drainer holds the cache (stay out).
static inline int vr_tcache_enter(vr_tcache *c, uint64_t token) {
  __atomic_store_n(&c->active, token, __ATOMIC_RELAXED);
  // Only the compiler may not move the load above the store; the processor
  // may, and the drainer's membarrier covers that.
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  if (__atomic_load_n(&c->drain, __ATOMIC_ACQUIRE) == 0) {
    // Odd before any entry changes (a release fence: no instruction on
    // x86): whoever sees a change, or what follows from it, sees this.
    __atomic_store_n(&c->seq, __atomic_load_n(&c->seq, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    return 1;
  }
  __atomic_store_n(&c->active, 0, __ATOMIC_RELEASE);
  return 0;
}

/// Owner: leaves the fast path (entered: vr_tcache_enter returned 1).
static inline void vr_tcache_leave(vr_tcache *c) {
  __atomic_store_n(&c->seq, __atomic_load_n(&c->seq, __ATOMIC_RELAXED) + 1, __ATOMIC_RELEASE);
  __atomic_store_n(&c->active, 0, __ATOMIC_RELEASE);
}

/// Owner, entered: takes a span of exactly `pages` pages of allocator
/// `token`. Returns 1 with *segment and *page set, else 0.
static inline int vr_tcache_take(vr_tcache *c, uint64_t token, uint64_t pages, uintptr_t *segment, uint64_t *page) {
  for (int i = 0; i < VR_TCACHE_ENTRIES; i++) {
    if (__atomic_load_n(&c->token[i], __ATOMIC_RELAXED) != token) continue;
    uint64_t span = __atomic_load_n(&c->span[i], __ATOMIC_RELAXED);
    if ((span & 0xFFFF) != pages) continue;
    *segment = __atomic_load_n(&c->segment[i], __ATOMIC_RELAXED);
    *page = span >> 16;
    __atomic_store_n(&c->token[i], 0, __ATOMIC_RELAXED);
    return 1;
  }
  return 0;
}

/// Owner, entered: keeps a span of allocator `token` unless `*closed` (the
/// arena's closed word) is set. Returns 0: not kept; 1: kept; 2: kept in
/// place of another span, returned in *old_* for the caller to free.
static inline int vr_tcache_put(vr_tcache *c, uint64_t token, uintptr_t segment, uint64_t span,
                                const uint64_t *closed, uint64_t *old_token, uintptr_t *old_segment,
                                uint64_t *old_span) {
  if (__atomic_load_n(closed, __ATOMIC_RELAXED) != 0) return 0;
  int slot = -1;
  for (int i = 0; i < VR_TCACHE_ENTRIES; i++) {
    if (__atomic_load_n(&c->token[i], __ATOMIC_RELAXED) == 0) { slot = i; break; }
  }
  int result = 1;
  if (slot < 0) {
    slot = (int)(c->victim++ % VR_TCACHE_ENTRIES);
    *old_token = __atomic_load_n(&c->token[slot], __ATOMIC_RELAXED);
    *old_segment = __atomic_load_n(&c->segment[slot], __ATOMIC_RELAXED);
    *old_span = __atomic_load_n(&c->span[slot], __ATOMIC_RELAXED);
    result = 2;
  }
  __atomic_store_n(&c->segment[slot], segment, __ATOMIC_RELAXED);
  __atomic_store_n(&c->span[slot], span, __ATOMIC_RELAXED);
  __atomic_store_n(&c->token[slot], token, __ATOMIC_RELAXED);
  return result;
}

/// Makes the calling thread's cache (and registers membarrier once per
/// process). NULL when caches are unavailable or the thread is exiting.
vr_tcache *vr_tcache_create(void);

/// What a drain hands over: one entry, called under the registry lock (the
/// callee must not take an allocator lock).
typedef void (*vr_tcache_sink)(void *context, uint64_t token, uintptr_t segment, uint64_t span);

/// Takes every entry of allocator `token` (not 0) out of every thread's
/// cache (including caches orphaned by a fork) and hands each to `sink`.
/// Only caches that hold such an entry are stopped, with one membarrier.
/// `closing`: the allocator's arenas are closed (their closed words set), so
/// no put may slip past the drain: one more membarrier first waits out the
/// fast paths of `token` in flight (and only those). A put that begins after a drain without `closing` may keep
/// its span. Returns 0, or an errno when membarrier failed (nothing taken).
int vr_tcache_drain(uint64_t token, int closing, vr_tcache_sink sink, void *context);

/// The calling thread is exiting: hands its cache's entries to `sink`,
/// unregisters and frees the cache; no cache is made for it again.
void vr_tcache_retire(vr_tcache_sink sink, void *context);

/// Spans and pages of allocator `token` in all caches now (a snapshot),
/// and a ticket for vr_tcache_unchanged. Returns 0 when an owner was inside
/// its fast path (the count may be torn: take another), else 1.
int vr_tcache_census(uint64_t token, uint64_t *spans, uint64_t *pages, uint64_t ticket[2]);

/// Whether no cache changed since the census that gave `ticket`: no fast
/// path entered, no drain or exiting thread took entries, no cache went
/// away. Then the census's spans were in the caches throughout, and nowhere
/// else, for whatever the caller read in between (statistics' arenas).
int vr_tcache_unchanged(const uint64_t ticket[2]);

/// Test only: membarrier calls made by drains so far.
uint64_t vr_tcache_barriers(void);

// MARK: - The allocator's registry (tcache.c): arenas' locks at fork, the release clock

/// One arena, as the at-fork handlers see it: its lock, and its "release
/// scheduled" word (cleared in a fork child, whose release clock is gone).
typedef struct vr_alloc_link {
  pthread_mutex_t *mutex;
  uint64_t *release_flag;
  struct vr_alloc_link *prev, *next;  // under the registry lock
} vr_alloc_link;

/// Adds an arena (made by the caller, alive until unlinked) to the arenas
/// whose locks the at-fork prepare handler takes (layer VR_FORK_ALLOCATOR:
/// the registry lock, then each arena's lock, newest first); the parent
/// releases them, the child releases them and starts a new fork generation.
/// Never called with an arena's lock held.
void vr_alloc_link_arena(vr_alloc_link *link);
/// Removes it (before the arena's lock is destroyed).
void vr_alloc_unlink_arena(vr_alloc_link *link);

/// The fork generation: 0 in a process that never forked with the allocator
/// in use, one more in each fork child. A slab page word made busy records
/// it; a busy word of an older generation has no owner any more.
extern uint32_t vr_alloc_generation_word;
static inline uint32_t vr_alloc_generation(void) {
  return __atomic_load_n(&vr_alloc_generation_word, __ATOMIC_RELAXED);
}

/// The registry lock, which also guards the release clock's schedule; a
/// condition variable on it (CLOCK_MONOTONIC deadline in ns; 0 waits until
/// woken) for the release clock's thread.
void vr_alloc_lock(void);
void vr_alloc_unlock(void);
/// The release clock's thread: takes its fork gate, then the lock; it holds
/// the gate whenever it runs (fork() waits for it) and `wait` (with the
/// lock held) frees both while it waits.
void vr_alloc_releaser_enter(void);
void vr_alloc_wait(uint64_t deadline_ns);
void vr_alloc_wake(void);
/// Under the lock: 1 when the caller must start the release clock's thread
/// (none runs in this process yet), else 0; `failed` undoes a claim whose
/// thread could not start.
int vr_alloc_claim_releaser(void);
void vr_alloc_releaser_failed(void);

#ifdef __cplusplus
}
#endif
#endif
