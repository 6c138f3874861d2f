// The fault handler, the region table it reads and the per-thread access
// scopes. Everything reachable from vr_on_fault is async-signal-safe: no
// allocation, no locks, no printing, only atomics, raw syscalls and memory
// that existed before the handler was installed.
#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be set by the manifest's cSettings"
#endif
#include "CVRange.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

// MARK: - Region table

enum { SLOT_FREE = 0, SLOT_CLAIMED = 1, SLOT_LIVE = 2, SLOT_RETIRING = 3 };

typedef struct {
  _Atomic int state;
  _Atomic int readers;  // handlers currently looking at this slot
  uintptr_t base;
  uintptr_t end;
  uintptr_t page_size;
  const uint64_t *map;
  int mechanism;
} vr_slot;

static vr_slot slots[VR_MAX_REGIONS];
static _Atomic int slot_high_water;  // slots at or above this were never used
static _Atomic int shared_uffd = -1;
static _Atomic unsigned fork_restore_failures;

// MARK: - Scopes

typedef struct {
  uintptr_t base, end;
  int slot;
  unsigned faults;
  unsigned recorded;
  uintptr_t records[VR_SCOPE_RECORDS];
} vr_scope;

typedef struct {
  int depth;
  vr_scope scopes[VR_SCOPE_DEPTH];
} vr_scope_stack;

// initial-exec: the handler must not reach __tls_get_addr, which may allocate.
static __thread vr_scope_stack scope_stack __attribute__((tls_model("initial-exec")));

int vr_scope_begin(int slot, const void *base, size_t length) {
  vr_scope_stack *s = &scope_stack;
  if (s->depth >= VR_SCOPE_DEPTH) return EOVERFLOW;
  vr_scope *c = &s->scopes[s->depth];
  c->base = (uintptr_t)base;
  c->end = (uintptr_t)base + length;
  c->slot = slot;
  c->faults = 0;
  c->recorded = 0;
  atomic_signal_fence(memory_order_seq_cst);
  s->depth += 1;
  atomic_signal_fence(memory_order_seq_cst);
  return 0;
}

unsigned vr_scope_faults(void) {
  vr_scope_stack *s = &scope_stack;
  atomic_signal_fence(memory_order_seq_cst);
  return s->depth > 0 ? s->scopes[s->depth - 1].faults : 0;
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
  s->depth -= 1;
  atomic_signal_fence(memory_order_seq_cst);
  return faults;
}

// MARK: - Handler

static struct sigaction previous_bus, previous_segv;
static _Atomic int handlers_installed;  // 0 none, 1 installing, 2 done

static int page_state(const vr_slot *r, uintptr_t page) {
  size_t index = (page - r->base) / r->page_size;
  uint64_t word = __atomic_load_n(&r->map[index / 32], __ATOMIC_ACQUIRE);
  return (int)((word >> (2 * (index % 32))) & 3);
}

// Makes `page` readable again: zero page (userfaultfd) or PROT_READ|WRITE.
// Returns 0, or an errno when the kernel refused (then the access cannot be
// resumed and is reported as a purged-page SIGBUS rather than looping).
static int fill_page(const vr_slot *r, uintptr_t page) {
  if (r->mechanism == VR_MECHANISM_USERFAULTFD) {
    size_t filled;
    int fd = atomic_load_explicit(&shared_uffd, memory_order_acquire);
    return fd >= 0 ? vr_uffd_zeropage(fd, (void *)page, r->page_size, &filled) : EBADF;
  }
  return mprotect((void *)page, r->page_size, PROT_READ | PROT_WRITE) == 0 ? 0 : errno;
}

// Hands `sig` to whatever was installed before us. When that is SIG_DFL or
// SIG_IGN the default action must happen: restore it and send the signal to
// this thread; it is delivered as soon as it is unblocked (at the latest on
// return from this handler), and a synchronous fault would re-trigger anyway.
static void chain(int sig, siginfo_t *info, void *context) {
  const struct sigaction *prev = sig == SIGBUS ? &previous_bus : &previous_segv;
  if (prev->sa_flags & SA_SIGINFO) {
    if (prev->sa_sigaction) prev->sa_sigaction(sig, info, context);
    return;
  }
  if (prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
    prev->sa_handler(sig);
    return;
  }
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigaction(sig, &dfl, NULL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  syscall(SYS_tgkill, getpid(), vr_gettid(), sig);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

// A touch of a purged volatile page: SIGBUS, whatever mechanism noticed it.
static void deliver_purged(int sig, siginfo_t *info, void *context, uintptr_t addr) {
  if (sig == SIGBUS) {
    chain(SIGBUS, info, context);
    return;
  }
  siginfo_t bus;
  memset(&bus, 0, sizeof bus);
  bus.si_signo = SIGBUS;
  bus.si_code = BUS_ADRERR;
  bus.si_addr = (void *)addr;
  chain(SIGBUS, &bus, context);
}

static void vr_on_fault(int sig, siginfo_t *info, void *context) {
  int saved_errno = errno;
  uintptr_t addr = (uintptr_t)info->si_addr;
  // Only faults (si_code > 0) carry an address; a signal sent with kill()
  // or raise() is never ours.
  int is_fault = info->si_code > 0 && (sig == SIGBUS ? info->si_code == BUS_ADRERR
                                                     : info->si_code == SEGV_ACCERR);
  int top = is_fault ? atomic_load_explicit(&slot_high_water, memory_order_acquire) : 0;
  for (int i = 0; i < top; i++) {
    vr_slot *r = &slots[i];
    if (atomic_load_explicit(&r->state, memory_order_acquire) != SLOT_LIVE) continue;
    atomic_fetch_add_explicit(&r->readers, 1, memory_order_acq_rel);
    if (atomic_load_explicit(&r->state, memory_order_acquire) != SLOT_LIVE ||
        addr < r->base || addr >= r->end) {
      atomic_fetch_sub_explicit(&r->readers, 1, memory_order_release);
      continue;
    }
    int expected = r->mechanism == VR_MECHANISM_USERFAULTFD ? SIGBUS : SIGSEGV;
    if (sig != expected) {  // not a fault VRange causes: not ours
      atomic_fetch_sub_explicit(&r->readers, 1, memory_order_release);
      break;
    }
    uintptr_t page = addr & ~(r->page_size - 1);
    // Innermost scope first: an optimistic access or a dirtying pass.
    vr_scope_stack *s = &scope_stack;
    for (int d = s->depth - 1; d >= 0; d--) {
      vr_scope *c = &s->scopes[d];
      if (c->slot == i && addr >= c->base && addr < c->end) {
        if (fill_page(r, page) != 0) break;  // cannot resume: SIGBUS below
        if (c->recorded < VR_SCOPE_RECORDS) c->records[c->recorded++] = page;
        c->faults += 1;
        atomic_fetch_sub_explicit(&r->readers, 1, memory_order_release);
        errno = saved_errno;
        return;
      }
    }
    if (page_state(r, page) == VR_STATE_NONVOLATILE && fill_page(r, page) == 0) {
      // Marked non-volatile but not repopulated yet (another thread is inside
      // markNonVolatile, or its repopulation failed): zeros are the page's
      // contents; carry on.
      atomic_fetch_sub_explicit(&r->readers, 1, memory_order_release);
      errno = saved_errno;
      return;
    }
    atomic_fetch_sub_explicit(&r->readers, 1, memory_order_release);
    deliver_purged(sig, info, context, addr);
    errno = saved_errno;
    return;
  }
  chain(sig, info, context);
  errno = saved_errno;
}

// MARK: - fork

// The kernel drops userfaultfd registrations in the child of fork() (without
// UFFD_FEATURE_EVENT_FORK, which needs CAP_SYS_PTRACE and a monitor): open a
// new descriptor and register every region again. Only raw syscalls here:
// the child of a multithreaded process may run async-signal-safe code only.
static void at_fork_child(void) {
  int old = atomic_load(&shared_uffd);
  if (old < 0) return;
  close(old);
  int fd = -1;
  if (vr_uffd_open(&fd) != 0) {
    atomic_store(&shared_uffd, -1);
    atomic_fetch_add(&fork_restore_failures, 1);
    return;
  }
  atomic_store(&shared_uffd, fd);
  int top = atomic_load(&slot_high_water);
  for (int i = 0; i < top; i++) {
    vr_slot *r = &slots[i];
    if (atomic_load(&r->state) != SLOT_LIVE || r->mechanism != VR_MECHANISM_USERFAULTFD) continue;
    if (vr_uffd_register(fd, (void *)r->base, r->end - r->base) != 0)
      atomic_fetch_add(&fork_restore_failures, 1);
  }
}

unsigned vr_fork_restore_failures(void) { return atomic_load(&fork_restore_failures); }

// MARK: - Installation and registration

static int install_handlers(void) {
  int state = atomic_load_explicit(&handlers_installed, memory_order_acquire);
  if (state == 2) return 0;
  int expected = 0;
  if (!atomic_compare_exchange_strong(&handlers_installed, &expected, 1)) {
    while (atomic_load_explicit(&handlers_installed, memory_order_acquire) != 2) sched_yield();
    return 0;
  }
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = vr_on_fault;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigemptyset(&action.sa_mask);
  // Touch the scope stack once so that its TLS block exists on this thread
  // (initial-exec TLS is static; this is belt and braces).
  scope_stack.depth = scope_stack.depth;
  if (sigaction(SIGBUS, &action, &previous_bus) != 0 ||
      sigaction(SIGSEGV, &action, &previous_segv) != 0) {
    int e = errno;
    atomic_store(&handlers_installed, 0);
    return e;
  }
  pthread_atfork(NULL, NULL, at_fork_child);
  atomic_store_explicit(&handlers_installed, 2, memory_order_release);
  return 0;
}

int vr_shared_uffd(int *fd_out) {
  int fd = atomic_load_explicit(&shared_uffd, memory_order_acquire);
  if (fd >= 0) {
    *fd_out = fd;
    return 0;
  }
  int opened;
  int e = vr_uffd_open(&opened);
  if (e != 0) return e;
  int none = -1;
  if (!atomic_compare_exchange_strong(&shared_uffd, &none, opened)) {
    close(opened);  // another thread won the race
    opened = none;
  }
  *fd_out = opened;
  return 0;
}

int vr_region_register(void *base, size_t length, size_t page_size,
                       const uint64_t *map, int mechanism, int *slot_out) {
  int e = install_handlers();
  if (e != 0) return e;
  for (int i = 0; i < VR_MAX_REGIONS; i++) {
    vr_slot *r = &slots[i];
    int free_state = SLOT_FREE;
    if (!atomic_compare_exchange_strong(&r->state, &free_state, SLOT_CLAIMED)) continue;
    r->base = (uintptr_t)base;
    r->end = (uintptr_t)base + length;
    r->page_size = page_size;
    r->map = map;
    r->mechanism = mechanism;
    int top = atomic_load(&slot_high_water);
    while (top < i + 1 && !atomic_compare_exchange_weak(&slot_high_water, &top, i + 1)) {}
    atomic_store_explicit(&r->state, SLOT_LIVE, memory_order_release);
    *slot_out = i;
    return 0;
  }
  return ENOSPC;
}

void vr_region_unregister(int slot) {
  if (slot < 0 || slot >= VR_MAX_REGIONS) return;
  vr_slot *r = &slots[slot];
  atomic_store_explicit(&r->state, SLOT_RETIRING, memory_order_release);
  while (atomic_load_explicit(&r->readers, memory_order_acquire) != 0) sched_yield();
  atomic_store_explicit(&r->state, SLOT_FREE, memory_order_release);
}

// MARK: - Dirtying pass (kernel-driven mode)

size_t vr_dirty_pages(int slot, void *start, size_t count, size_t page_size,
                      uint64_t *faulted) {
  size_t lost = 0;
  if (count == 0) return 0;
  if (vr_scope_begin(slot, start, count * page_size) != 0) return (size_t)-1;
  for (size_t i = 0; i < count; i++) {
    unsigned before = scope_stack.scopes[scope_stack.depth - 1].faults;
    atomic_signal_fence(memory_order_seq_cst);
    // A write cancels MADV_FREE. A compare-and-swap of a byte with itself
    // writes without changing it and, unlike an atomic add of zero, cannot
    // be lowered to a plain load. A reclaimed page faults here and comes
    // back zero-filled.
    uint8_t *byte = (uint8_t *)start + i * page_size;
    uint8_t seen = __atomic_load_n(byte, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(byte, &seen, seen, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    atomic_signal_fence(memory_order_seq_cst);
    if (scope_stack.scopes[scope_stack.depth - 1].faults != before) {
      faulted[i / 64] |= (uint64_t)1 << (i % 64);
      lost += 1;
    }
  }
  vr_scope_end(NULL, NULL);
  return lost;
}
