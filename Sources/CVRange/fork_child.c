// The at-fork child handler. The child of a multithreaded process may run
// async-signal-safe code only, and has one thread: whatever another thread
// of the parent held at the moment of fork has no owner here.
//  - reader counts of slots (a thread waiting in the handler) are reset;
//  - slots being registered or unregistered by another thread are freed;
//  - a half-done handler installation is undone;
//  - pages locked (10) by another thread are resolved: they were volatile,
//    so they end purged (discarded);
//  - the kernel dropped the child's userfaultfd registrations (without
//    UFFD_FEATURE_EVENT_FORK, which needs CAP_SYS_PTRACE and a monitor): a
//    new descriptor is opened and every region registered again.
#include "internal.h"

#include <pthread.h>
#include <sys/mman.h>

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
      void *page = (char *)r->base + (w * 32 + (size_t)bit / 2) * r->page_size;
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
    int state = atomic_load(&s->state);
    if (state == SLOT_CLAIMED || state == SLOT_RETIRING) {
      atomic_store(&s->base, 0);
      atomic_store(&s->end, 0);
      atomic_store(&s->state, SLOT_FREE);
    } else if (state == SLOT_LIVE && !atomic_load(&s->closing) && !(s->info.flags & VR_REGION_SHARED)) {
      resolve_orphaned_locks(&s->info);
    }
  }
  vr_uffd_after_fork();
}

void vr_register_at_fork(void) {
  static _Atomic int registered;
  if (!atomic_exchange(&registered, 1)) vr_atfork_register(VR_FORK_REGIONS, NULL, NULL, at_fork_child);
}
