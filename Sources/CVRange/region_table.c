// The lock-free table of registered regions that the fault handler reads.
// A slot is FREE, CLAIMED (being filled by register), LIVE, or RETIRING
// (unregister waits there until no handler holds its reader count).
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <sys/mman.h>

vr_slot vr_slots[VR_MAX_REGIONS];
_Atomic int vr_slot_high_water;

int vr_install_handlers(void);  // fault_handler.c

vr_slot *vr_slot_enter(uintptr_t addr, int *index) {
  int top = atomic_load_explicit(&vr_slot_high_water, memory_order_acquire);
  for (int i = 0; i < top; i++) {
    vr_slot *s = &vr_slots[i];
    // Plain (relaxed) compares first: a stale value only makes us look
    // closer or move on; the check that counts follows the reader count.
    if (addr < atomic_load_explicit(&s->base, memory_order_relaxed) ||
        addr >= atomic_load_explicit(&s->end, memory_order_relaxed))
      continue;
    // seq_cst pairs with vr_region_unregister: either it sees this reader,
    // or this sees the slot retiring (a store-load handshake). While the
    // count is held the slot cannot be freed, so `info` stays valid.
    atomic_fetch_add(&s->readers, 1);
    if (atomic_load(&s->state) == SLOT_LIVE &&
        addr >= atomic_load_explicit(&s->base, memory_order_relaxed) &&
        addr < atomic_load_explicit(&s->end, memory_order_relaxed)) {
      *index = i;
      return s;
    }
    atomic_fetch_sub(&s->readers, 1);
  }
  return NULL;
}

void vr_slot_leave(vr_slot *s) { atomic_fetch_sub(&s->readers, 1); }

int vr_region_register(const vr_region_info *info, int *slot_out) {
  int e = vr_install_handlers();
  if (e != 0) return e;
  for (int i = 0; i < VR_MAX_REGIONS; i++) {
    vr_slot *s = &vr_slots[i];
    int free_state = SLOT_FREE;
    if (!atomic_compare_exchange_strong(&s->state, &free_state, SLOT_CLAIMED)) continue;
    s->info = *info;
    // Nothing is registered yet: the registration covers no chunk, and is
    // therefore with the current descriptor.
    atomic_store(&s->registered, 1);
    atomic_store(&s->chunk_lock, 0);
    atomic_store(&s->closing, 0);
    atomic_store(&s->changes, 0);
    atomic_store(&s->scope_fills, 0);
    atomic_store_explicit(&s->base, (uintptr_t)info->base, memory_order_relaxed);
    atomic_store_explicit(&s->end, (uintptr_t)info->base + info->length, memory_order_relaxed);
    int top = atomic_load(&vr_slot_high_water);
    while (top < i + 1 && !atomic_compare_exchange_weak(&vr_slot_high_water, &top, i + 1)) {}
    atomic_store(&s->state, SLOT_LIVE);  // seq_cst: publishes info, base and end
    *slot_out = i;
    return 0;
  }
  return ENOSPC;
}

void vr_region_closing(int slot) {
  // seq_cst: see vr_region_change_enter.
  if (slot >= 0 && slot < VR_MAX_REGIONS) atomic_store(&vr_slots[slot].closing, 1);
}

void vr_region_change_begin(int slot) { atomic_fetch_add(&vr_slots[slot].changes, 1); }

void vr_region_change_end(int slot) { atomic_fetch_sub(&vr_slots[slot].changes, 1); }

long vr_region_changes(int slot) { return atomic_load(&vr_slots[slot].changes); }

int vr_region_change_enter(int slot) {
  vr_slot *s = &vr_slots[slot];
  // seq_cst, a store-load handshake with close() (vr_region_closing, then
  // vr_region_changes): either close() sees this count and waits, or this
  // sees the region closing and changes nothing.
  atomic_fetch_add(&s->changes, 1);
  if (atomic_load(&s->closing)) {
    atomic_fetch_sub(&s->changes, 1);
    return 0;
  }
  return 1;
}

// Discards (and under the mprotect mechanism protects) `page`, which the
// caller holds locked, as a purge does, counted as a change of the
// region's mappings: never once close() has begun to replace them (its
// empty mapping must stay readable; a protected page there would make a
// racing access fault for ever, resumed by the handler of a closing region).
void vr_region_discard_locked(int slot, const vr_region_info *r, uintptr_t page) {
  if (!vr_region_change_enter(slot)) return;
  if (r->mechanism == VR_MECHANISM_MPROTECT) mprotect((void *)page, r->page_size, PROT_NONE);
  vr_discard((void *)page, r->page_size);
  vr_region_change_end(slot);
}

void vr_region_repurge_filled(int slot, size_t first, size_t count) {
  if (slot < 0 || slot >= VR_MAX_REGIONS) return;
  const vr_region_info *r = &vr_slots[slot].info;
  for (size_t p = first; p < first + count; p++) {
    uintptr_t page = (uintptr_t)r->base + p * r->page_size;
    for (;;) {
      int state = vr_page_state(r, page);
      if (state == VR_STATE_LOCKED) {  // a purge in flight: it discards after the fill, or it did before
        sched_yield();
        continue;
      }
      if (state != VR_STATE_PURGED) break;
      // Purged, and possibly filled after its discard: discard it again
      // under its lock, as a purge does (generation first: an access that
      // read the fill sees the discard).
      if (!vr_page_cas(r, page, VR_STATE_PURGED, VR_STATE_LOCKED)) continue;
      vr_bump_generation(r, page);
      vr_region_discard_locked(slot, r, page);
      vr_page_cas(r, page, VR_STATE_LOCKED, VR_STATE_PURGED);
      break;
    }
  }
}

int vr_region_repopulate_kernel_driven(int slot, size_t first, size_t count) {
  if (slot < 0 || slot >= VR_MAX_REGIONS) return 0;
  const vr_region_info *r = &vr_slots[slot].info;
  int failed = 0;
  for (size_t p = first; p < first + count; p++) {
    uintptr_t page = (uintptr_t)r->base + p * r->page_size;
    for (;;) {
      int state = vr_page_state(r, page);
      if (state == VR_STATE_LOCKED) {  // a mark, a settle or a fault holds it: look again after
        sched_yield();
        continue;
      }
      // Marked volatile (or purged) since it was cleared: no longer this
      // thread's to fill. A missing volatile page is a reclaim; a zero page
      // mapped over it would hide that (the next unmark would call it
      // intact). The fault handler fills it when it is touched.
      if (state != VR_STATE_NONVOLATILE) break;
      if (!vr_page_cas(r, page, VR_STATE_NONVOLATILE, VR_STATE_LOCKED)) continue;
      int e;
      size_t filled;
      int fd = atomic_load_explicit(&vr_uffd_fd, memory_order_acquire);
      if (fd < 0)
        e = EBADF;
      else if (r->zero_source)  // hugetlbfs: no zero page
        e = vr_uffd_copy(fd, (void *)page, r->zero_source, r->page_size);
      else
        e = vr_uffd_zeropage_pages(fd, (void *)page, r->page_size, r->page_size, &filled);
      vr_page_cas(r, page, VR_STATE_LOCKED, VR_STATE_NONVOLATILE);
      if (e != 0) failed++;  // the handler fills it on its first touch
      break;
    }
  }
  return failed;
}

void vr_region_unregister(int slot) {
  if (slot < 0 || slot >= VR_MAX_REGIONS) return;
  vr_slot *s = &vr_slots[slot];
  atomic_store(&s->state, SLOT_RETIRING);  // seq_cst: see vr_slot_enter
  while (atomic_load(&s->readers) != 0) sched_yield();
  atomic_store(&s->registered, 0);
  atomic_store_explicit(&s->base, 0, memory_order_relaxed);
  atomic_store_explicit(&s->end, 0, memory_order_relaxed);
  atomic_store_explicit(&s->state, SLOT_FREE, memory_order_release);
}

int vr_unprotect_widened(const vr_region_info *r, size_t first, size_t count) {
  size_t pages = r->length / r->page_size;
  size_t lo = first, hi = first + count;
  // A volatile page (01) is always accessible under the mprotect mechanism
  // (it is only protected while locked, 10): stop there. Everything between
  // may be protected (purged, locked, or non-volatile whose unprotect failed).
  while (lo > 0 && vr_page_state_at(r, lo - 1) != VR_STATE_VOLATILE) lo--;
  while (hi < pages && vr_page_state_at(r, hi) != VR_STATE_VOLATILE) hi++;
  uint64_t lost = 0;
  for (size_t p = lo; p < hi; p++) {
    if (p >= first && p < first + count) continue;
    if (vr_page_state_at(r, p) & 2) lost++;  // 10 or 11: no SIGBUS any more
  }
  char *start = (char *)r->base + lo * r->page_size;
  if (mprotect(start, (hi - lo) * r->page_size, PROT_READ | PROT_WRITE) != 0) return errno;
  if (r->coverage_lost && lost) __atomic_fetch_add(r->coverage_lost, lost, __ATOMIC_RELAXED);
  return 0;
}
