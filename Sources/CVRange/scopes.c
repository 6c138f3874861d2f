// Per-thread optimistic-access scopes, and kernel-driven markNonVolatile's
// settling pass, which runs in a scope slot of its own.
#include "internal.h"

#include <errno.h>
#include <string.h>

// One slot more than callers may nest, reserved for vr_dirty_pages, which may
// run inside any number of optimistic accesses.
typedef struct {
  int depth;
  vr_scope scopes[VR_SCOPE_DEPTH + 1];
} vr_scope_stack;

// initial-exec: the handler must not reach __tls_get_addr, which may allocate.
static __thread vr_scope_stack scope_stack __attribute__((tls_model("initial-exec")));

static int scope_push(int slot, const void *base, size_t length, int dirty_pass, int limit) {
  vr_scope_stack *s = &scope_stack;
  if (s->depth >= limit) return EOVERFLOW;
  vr_scope *c = &s->scopes[s->depth];
  c->base = (uintptr_t)base;
  c->end = (uintptr_t)base + length;
  c->slot = slot;
  c->dirty_pass = dirty_pass;
  c->faults = 0;
  c->recorded = 0;
  c->counted = 0;
  atomic_signal_fence(memory_order_seq_cst);
  s->depth += 1;
  atomic_signal_fence(memory_order_seq_cst);
  return 0;
}

int vr_scope_begin(int slot, const void *base, size_t length) {
  return scope_push(slot, base, length, 0, VR_SCOPE_DEPTH);
}

unsigned vr_scope_end(uintptr_t *records, int *overflow) {
  vr_scope_stack *s = &scope_stack;
  atomic_signal_fence(memory_order_seq_cst);
  if (s->depth == 0) return 0;
  vr_scope *c = &s->scopes[s->depth - 1];
  unsigned n = c->recorded < VR_SCOPE_RECORDS ? c->recorded : VR_SCOPE_RECORDS;
  if (records) memcpy(records, c->records, n * sizeof(uintptr_t));
  if (overflow) *overflow = c->faults > VR_SCOPE_RECORDS;
  unsigned faults = c->faults;
  // A scope counted in its slot with no fault recorded filled nothing; one
  // with faults stays counted until vr_scope_restored.
  if (c->counted && faults == 0) atomic_fetch_sub(&vr_slots[c->slot].scope_fills, 1);
  s->depth -= 1;
  atomic_signal_fence(memory_order_seq_cst);
  return faults;
}

vr_scope *vr_scope_for(int index, uintptr_t addr) {
  vr_scope_stack *s = &scope_stack;
  for (int d = s->depth - 1; d >= 0; d--) {
    vr_scope *c = &s->scopes[d];
    if (c->slot == index && addr >= c->base && addr < c->end) {
      // Counted before the handler can fill anything for it: a fork that
      // copies a page filled for this access also copies the count.
      if (!c->dirty_pass && !c->counted && !(vr_slots[index].info.flags & VR_REGION_SHARED)) {
        c->counted = 1;
        atomic_fetch_add(&vr_slots[index].scope_fills, 1);
      }
      return c;
    }
  }
  return NULL;
}

void vr_scopes_after_fork(void) {
  vr_scope_stack *s = &scope_stack;  // the forking thread's: it goes on in the child
  for (int d = 0; d < s->depth; d++)
    if (s->scopes[d].counted) atomic_fetch_add(&vr_slots[s->scopes[d].slot].scope_fills, 1);
}

void vr_scope_restored(int slot) {
  if (slot >= 0 && slot < VR_MAX_REGIONS) atomic_fetch_sub(&vr_slots[slot].scope_fills, 1);
}

void vr_scope_record(vr_scope *scope, uintptr_t page) {
  if (scope->recorded < VR_SCOPE_RECORDS) scope->records[scope->recorded++] = page;
  scope->faults += 1;
}

static int page_is_zero(const uint8_t *page, size_t page_size) {
  const uint64_t *w = (const uint64_t *)page;
  for (size_t i = 0; i < page_size / sizeof(uint64_t); i++)
    if (w[i] != 0) return 0;
  return 1;
}

// Replaces resident all-zero pages [start, start+count pages) with the
// shared zero page: their contents stay, their memory goes back, and they
// are no longer lazily freed. The caller holds them locked.
static void zero_run(uint8_t *start, size_t count, size_t page_size) {
  if (count == 0) return;
  int fd = atomic_load(&vr_uffd_fd);
  if (fd < 0 || vr_discard(start, count * page_size) != 0) return;
  vr_uffd_zeropage_pages(fd, start, count * page_size, page_size, NULL);
}

size_t vr_dirty_pages(int slot, void *start, size_t count, size_t page_size, uint64_t *faulted) {
  size_t lost = 0;
  if (count == 0) return 0;
  int blocked = 0;
  vr_unblock_fault_signals(&blocked);
  scope_push(slot, start, count * page_size, 1, VR_SCOPE_DEPTH + 1);  // cannot fail: reserved slot
  vr_scope *scope = &scope_stack.scopes[scope_stack.depth - 1];
  size_t zeros = 0;  // pages in the current run of resident all-zero pages
  for (size_t i = 0; i < count; i++) {
    uint8_t *page = (uint8_t *)start + i * page_size;
    VR_HOOK(VR_HOOK_DIRTY_PAGE, page);
    unsigned before = scope->faults;
    atomic_signal_fence(memory_order_seq_cst);
    // Probe with a read: a reclaimed page faults here and the handler maps
    // the shared zero page, which is all it needs (no memory).
    uint8_t seen = __atomic_load_n(page, __ATOMIC_RELAXED);
    atomic_signal_fence(memory_order_seq_cst);
    int zero = scope->faults == before && page_is_zero(page, page_size);
    if (scope->faults == before && !zero) {
      // A write cancels MADV_FREE. A compare-and-swap of a byte with itself
      // writes without changing it and, unlike an atomic add of zero, cannot
      // be lowered to a plain load. If the kernel reclaimed the page since
      // the read, this faults and the page comes back zero-filled.
      while (!__atomic_compare_exchange_n(page, &seen, seen, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
      atomic_signal_fence(memory_order_seq_cst);
    }
    if (scope->faults != before) {
      faulted[i / 64] |= (uint64_t)1 << (i % 64);
      lost += 1;
      zero = 0;
    }
    if (zero) {
      zeros++;
    } else {
      zero_run(page - zeros * page_size, zeros, page_size);
      zeros = 0;
    }
  }
  zero_run((uint8_t *)start + (count - zeros) * page_size, zeros, page_size);
  vr_scope_end(NULL, NULL);
  vr_reblock_fault_signals(blocked);
  return lost;
}
