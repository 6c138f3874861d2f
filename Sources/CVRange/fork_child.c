// The at-fork child handler. The child of a multithreaded process may run
// async-signal-safe code only, and has one thread: whatever another thread
// of the parent held at the moment of fork has no owner here.
//  - reader counts of slots (a thread waiting in the handler) are reset;
//  - slots being registered or unregistered by another thread are freed;
//  - a half-done handler installation is undone;
//  - counts of operations in flight on a region (mapping changes that
//    close() waits for) are reset;
//  - pages locked (10) by another thread are resolved: they were volatile,
//    so they end purged (discarded); with userfaultfd, a chunk whose first
//    purge was in flight is prepared and marked, so that it is registered
//    below and the purged page faults (2d);
//  - pages another thread's optimistic access had filled for its body
//    (purged, but readable until that access ends, which it never does
//    here) are purged again: every purged page of a region with such an
//    access in flight is discarded and protected again (2c);
//  - the kernel dropped the child's userfaultfd registrations (without
//    UFFD_FEATURE_EVENT_FORK, which needs CAP_SYS_PTRACE and a monitor): a
//    new descriptor is opened and every region registered again.
#include "internal.h"

#include <pthread.h>
#include <sys/mman.h>

// The chunk holding page `index` of a userfaultfd region is registered in
// the child (vr_uffd_after_fork registers marked chunks): if its first
// registration was in flight, finish its preparation and mark it.
static void mark_chunk(vr_region_info *r, size_t index) {
  size_t c = index / r->chunk_pages;
  if (__atomic_load_n(&r->chunks[c / 64], __ATOMIC_ACQUIRE) >> (c % 64) & 1) return;
  size_t pages = r->length / r->page_size;
  size_t lo = c * r->chunk_pages, hi = lo + r->chunk_pages < pages ? lo + r->chunk_pages : pages;
  vr_uffd_populate_chunk((char *)r->base + lo * r->page_size, (hi - lo) * r->page_size, r->page_size);
  __atomic_fetch_or(&r->chunks[c / 64], (uint64_t)1 << (c % 64), __ATOMIC_RELEASE);
}

// Purges [first, first+count) again: protected (mprotect mechanism), discarded.
static void discard_run(vr_region_info *r, size_t first, size_t count) {
  if (count == 0) return;
  void *start = (char *)r->base + first * r->page_size;
  if (r->mechanism == VR_MECHANISM_MPROTECT) mprotect(start, count * r->page_size, PROT_NONE);
  vr_discard(start, count * r->page_size);
}

// Every purged page of `r` discarded (and protected) again, by runs.
static void repurge_all(vr_region_info *r) {
  size_t pages = r->length / r->page_size;
  size_t run = 0;  // purged pages just before page p
  for (size_t p = 0; p < pages; p++) {
    if (vr_page_state_at(r, p) == VR_STATE_PURGED) {
      run++;
    } else {
      discard_run(r, p - run, run);
      run = 0;
    }
  }
  discard_run(r, pages - run, run);
}

static void resolve_orphaned_locks(vr_region_info *r) {
  size_t pages = r->length / r->page_size;
  for (size_t w = 0; w < (pages + 31) / 32; w++) {
    uint64_t word = __atomic_load_n(&r->map[w], __ATOMIC_ACQUIRE);
    uint64_t locked = (word >> 1) & ~word & 0x5555555555555555ull;
    if (locked == 0) continue;
    __atomic_fetch_add(&r->generations[w], 1, __ATOMIC_SEQ_CST);
    __atomic_fetch_or(&r->map[w], locked, __ATOMIC_ACQ_REL);  // 10 -> 11
    for (int bit = 0; bit < 64; bit += 2) {
      if (!(locked >> bit & 1)) continue;
      size_t index = w * 32 + (size_t)bit / 2;
      void *page = (char *)r->base + index * r->page_size;
      if (r->mechanism == VR_MECHANISM_USERFAULTFD) mark_chunk(r, index);
      if (r->mechanism == VR_MECHANISM_MPROTECT) mprotect(page, r->page_size, PROT_NONE);
      vr_discard(page, r->page_size);
    }
  }
}

static void at_fork_child(void) {
  vr_handlers_after_fork();
  int top = atomic_load(&vr_slot_high_water);
  for (int i = 0; i < top; i++) {
    vr_slot *s = &vr_slots[i];
    atomic_store(&s->readers, 0);
    atomic_store(&s->chunk_lock, 0);
    atomic_store(&s->changes, 0);
    int fills = atomic_exchange(&s->scope_fills, 0);
    int state = atomic_load(&s->state);
    if (state == SLOT_CLAIMED || state == SLOT_RETIRING) {
      atomic_store(&s->base, 0);
      atomic_store(&s->end, 0);
      atomic_store(&s->state, SLOT_FREE);
    } else if (state == SLOT_LIVE && !atomic_load(&s->closing) && !(s->info.flags & VR_REGION_SHARED)) {
      resolve_orphaned_locks(&s->info);
      if (fills > 0) repurge_all(&s->info);
    }
  }
  vr_scopes_after_fork();
  vr_uffd_after_fork();
}

void vr_register_at_fork(void) {
  static _Atomic int registered;
  if (!atomic_exchange(&registered, 1)) vr_atfork_register(VR_FORK_REGIONS, NULL, NULL, at_fork_child);
}

// At load, never lazily (the first region may be made under an arena's
// lock, which fork()'s prepare waits for: atfork.c).
__attribute__((constructor)) static void regions_register_at_fork(void) { vr_register_at_fork(); }
