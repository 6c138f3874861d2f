// Shared between CVRange's C files: the region table, the scope stack and the
// test hook points. Not part of the public header.
#ifndef CVRANGE_INTERNAL_H
#define CVRANGE_INTERNAL_H

#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be set by the manifest's cSettings"
#endif
#include "CVRange.h"

#include <signal.h>
#include <stdatomic.h>
#include <sys/types.h>

// MARK: - Region table

enum { SLOT_FREE = 0, SLOT_CLAIMED = 1, SLOT_LIVE = 2, SLOT_RETIRING = 3 };

typedef struct {
  _Atomic int state;
  _Atomic int readers;  // handlers currently looking at this slot
  _Atomic uintptr_t base;
  _Atomic uintptr_t end;
  _Atomic int registered;  // userfaultfd: its registered chunks are with vr_uffd_fd
  _Atomic int chunk_lock;  // serializes vr_region_register_chunks
  _Atomic int closing;     // the region is being closed: its memory is being replaced
  // Operations in flight, per region, that the fork child resets (their
  // threads do not exist there): mapping changes (discards, protections,
  // registrations: close() waits for them), and optimistic accesses that
  // may have filled purged pages (the child purges those pages again).
  _Atomic long changes;
  _Atomic int scope_fills;
  vr_region_info info;     // written while CLAIMED, read while LIVE
} vr_slot;

extern vr_slot vr_slots[VR_MAX_REGIONS];
extern _Atomic int vr_slot_high_water;  // slots at or above this were never used

/// Finds the live slot whose region contains `addr` and holds its reader
/// count (release with vr_slot_leave), so that unregistering waits for the
/// caller. Compares addresses first, with plain loads; only the matching
/// slot's counter is touched.
vr_slot *vr_slot_enter(uintptr_t addr, int *index);
void vr_slot_leave(vr_slot *slot);

// MARK: - Page states in a region's map

static inline uint64_t *vr_state_word(const vr_region_info *r, uintptr_t page, int *shift) {
  size_t index = (page - (uintptr_t)r->base) / r->page_size;
  *shift = (int)(2 * (index % 32));
  return &r->map[index / 32];
}

static inline int vr_page_state_at(const vr_region_info *r, size_t index) {
  uint64_t word = __atomic_load_n(&r->map[index / 32], __ATOMIC_SEQ_CST);
  return (int)((word >> (2 * (index % 32))) & 3);
}

static inline int vr_page_state(const vr_region_info *r, uintptr_t page) {
  return vr_page_state_at(r, (page - (uintptr_t)r->base) / r->page_size);
}

/// One CAS of a page's state from `from` to `to`; false when it was not
/// `from` (another thread changed it first).
static inline int vr_page_cas(const vr_region_info *r, uintptr_t page, int from, int to) {
  int shift;
  uint64_t *word = vr_state_word(r, page, &shift);
  uint64_t old = __atomic_load_n(word, __ATOMIC_SEQ_CST);
  for (;;) {
    if ((int)((old >> shift) & 3) != from) return 0;
    uint64_t desired = (old & ~((uint64_t)3 << shift)) | ((uint64_t)to << shift);
    if (__atomic_compare_exchange_n(word, &old, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
      return 1;
  }
}

/// Bumps the discard generation of the map word holding `page`: any
/// optimistic access that read it before sees that a page near it may have
/// been discarded (VolatilityMap documents the protocol).
static inline void vr_bump_generation(const vr_region_info *r, uintptr_t page) {
  size_t index = (page - (uintptr_t)r->base) / r->page_size;
  __atomic_fetch_add(&r->generations[index / 32], 1, __ATOMIC_SEQ_CST);
}

// MARK: - userfaultfd

/// The process-wide userfaultfd, or -1.
// Discards (mprotect: protects) a page its caller holds locked, counted as a
// change of the region's mappings; nothing once the region is closing.
void vr_region_discard_locked(int slot, const vr_region_info *r, uintptr_t page);
extern _Atomic int vr_uffd_fd;
/// The at-fork child handler's part: a new descriptor, every region
/// registered again.
void vr_uffd_after_fork(void);
/// Registers every chunk of slot `s` whose bit is set with `fd`; 0 or the
/// first errno.
int vr_uffd_register_marked_chunks(const vr_slot *s, int fd);
/// Prepares [start, start+length), a chunk about to be registered: zero
/// page at its missing pages, an anon_vma for its mapping. 0 when the
/// kernel lacks MADV_POPULATE_READ (fill with UFFDIO_ZEROPAGE after).
int vr_uffd_populate_chunk(char *start, size_t length, size_t page_size);

// MARK: - Scopes

typedef struct {
  uintptr_t base, end;
  int slot;
  int dirty_pass;  // vr_dirty_pages' own scope: its pages are locked by this thread
  int counted;     // counted in its slot's scope_fills (a fault was looked up in it)
  unsigned faults;
  unsigned recorded;
  uintptr_t records[VR_SCOPE_RECORDS];
} vr_scope;

/// The innermost scope of this thread covering `addr` in slot `index`.
vr_scope *vr_scope_for(int index, uintptr_t addr);
/// In the fork child, after the counts were reset: counts again the scopes
/// of the forking thread (the one thread there), which go on and end.
void vr_scopes_after_fork(void);
/// Counts and records a fault in `scope`.
void vr_scope_record(vr_scope *scope, uintptr_t page);

// MARK: - Handler

void vr_on_fault(int sig, siginfo_t *info, void *context);
/// Resets what a half-done installation left in a fork child.
void vr_handlers_after_fork(void);
/// Registers the at-fork child handler (once; before the handlers are
/// installed, so that a fork during the installation is covered).
void vr_register_at_fork(void);

// MARK: - Test hooks

#ifdef VR_TEST_HOOKS
#define VR_HOOK(point, arg) vr_test_hook_fire((point), (uintptr_t)(arg))
#else
#define VR_HOOK(point, arg) ((void)0)
#endif

#endif
