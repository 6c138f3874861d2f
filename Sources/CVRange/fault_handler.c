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
  int dirty_pass;  // vr_dirty_pages' own scope: its pages are locked by this thread
  unsigned faults;
  unsigned recorded;
  uintptr_t records[VR_SCOPE_RECORDS];
} vr_scope;

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
  s->depth -= 1;
  atomic_signal_fence(memory_order_seq_cst);
  return faults;
}

// MARK: - Handler

static struct sigaction previous_bus, previous_segv;
static _Atomic int handlers_installed;  // 0 none, 1 installing, 2 done

static uint64_t *state_word(const vr_slot *r, uintptr_t page, int *shift) {
  size_t index = (page - r->base) / r->page_size;
  *shift = (int)(2 * (index % 32));
  return (uint64_t *)&r->map[index / 32];
}

static int page_state(const vr_slot *r, uintptr_t page) {
  int shift;
  uint64_t *word = state_word(r, page, &shift);
  return (int)((__atomic_load_n(word, __ATOMIC_ACQUIRE) >> shift) & 3);
}

// The page is missing although the map says volatile: the kernel reclaimed it
// (kernel-driven mode). Record that in the map (01 -> 11) before anything
// fills it, so that every later markNonVolatile reports it purged. Returns
// the page's state afterwards.
static int record_reclaim(const vr_slot *r, uintptr_t page) {
  int shift;
  uint64_t *word = state_word(r, page, &shift);
  uint64_t old = __atomic_load_n(word, __ATOMIC_ACQUIRE);
  while (((old >> shift) & 3) == VR_STATE_VOLATILE) {
    uint64_t desired = old | ((uint64_t)VR_STATE_PURGED << shift);
    if (__atomic_compare_exchange_n(word, &old, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
      return VR_STATE_PURGED;
  }
  return (int)((old >> shift) & 3);
}

// Makes `page` readable again: zero page (userfaultfd) or PROT_READ|WRITE.
// Returns 0, or an errno when the kernel refused (then the access cannot be
// resumed and is reported as a purged-page SIGBUS rather than looping).
static int fill_page(const vr_slot *r, uintptr_t page) {
  if (r->mechanism == VR_MECHANISM_USERFAULTFD) {
    size_t filled;
    int fd = atomic_load_explicit(&shared_uffd, memory_order_acquire);
    return fd >= 0 ? vr_uffd_zeropage_pages(fd, (void *)page, r->page_size, r->page_size, &filled) : EBADF;
  }
  return mprotect((void *)page, r->page_size, PROT_READ | PROT_WRITE) == 0 ? 0 : errno;
}

// Hands `sig` to whatever was installed before us, the way the kernel would
// have delivered it: SIG_DFL and SIG_IGN first (whatever SA_SIGINFO says),
// then the handler with its own sa_mask (and `sig` itself unless SA_NODEFER)
// blocked, honouring SA_RESETHAND.
static void chain(int sig, siginfo_t *info, void *context) {
  struct sigaction *prev = sig == SIGBUS ? &previous_bus : &previous_segv;
  void (*plain)(int) = prev->sa_handler;  // shares storage with sa_sigaction
  int is_fault = info->si_code > 0;
  if (plain == SIG_IGN && !is_fault) return;  // a sent signal the application ignores
  if (plain == SIG_DFL || plain == SIG_IGN) {
    // The default action (a fault cannot be ignored): restore it and send the
    // signal to this thread. It is delivered once unblocked (at the latest on
    // return from this handler); a synchronous fault would recur anyway.
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    syscall(SYS_tgkill, getpid(), vr_gettid(), sig);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    return;
  }
  struct sigaction call = *prev;
  if (prev->sa_flags & SA_RESETHAND) {
    // One-shot: later deliveries take the default action.
    memset(prev, 0, sizeof *prev);
    prev->sa_handler = SIG_DFL;
  }
  sigset_t mask = call.sa_mask, saved;
  if (!(call.sa_flags & SA_NODEFER)) sigaddset(&mask, sig);
  pthread_sigmask(SIG_BLOCK, &mask, &saved);
  if (call.sa_flags & SA_SIGINFO)
    call.sa_sigaction(sig, info, context);
  else
    call.sa_handler(sig);
  pthread_sigmask(SIG_SETMASK, &saved, NULL);
}

// Looks `addr` up in the table. On success the slot's reader count is held
// (release it with slot_leave) so that unregister waits for this handler.
static vr_slot *slot_enter(uintptr_t addr, int *index) {
  int top = atomic_load(&slot_high_water);
  for (int i = 0; i < top; i++) {
    vr_slot *r = &slots[i];
    if (atomic_load_explicit(&r->state, memory_order_acquire) != SLOT_LIVE) continue;
    // seq_cst pairs with vr_region_unregister: either it sees this reader,
    // or this sees the slot retiring (a store-load handshake).
    atomic_fetch_add(&r->readers, 1);
    if (atomic_load(&r->state) == SLOT_LIVE && addr >= r->base && addr < r->end) {
      *index = i;
      return r;
    }
    atomic_fetch_sub(&r->readers, 1);
  }
  return NULL;
}

static void slot_leave(vr_slot *r) { atomic_fetch_sub(&r->readers, 1); }

// The innermost scope of this thread covering `addr` in slot `index`.
static vr_scope *scope_for(int index, uintptr_t addr) {
  vr_scope_stack *s = &scope_stack;
  for (int d = s->depth - 1; d >= 0; d--) {
    vr_scope *c = &s->scopes[d];
    if (c->slot == index && addr >= c->base && addr < c->end) return c;
  }
  return NULL;
}

// What a fault on a registered page means, by the page's state:
//  - in this thread's dirtying pass (its own locked pages): a reclaimed page;
//    fill it and count it.
//  - locked (10) by an operation on another thread: wait until it is done,
//    then look again (a purge ends purged, a mark ends (non-)volatile).
//  - volatile but missing (userfaultfd): the kernel reclaimed it; record it
//    as purged first.
//  - purged, inside an optimistic access: fill it, count it, resume.
//  - non-volatile: not repopulated yet; zeros are its contents, fill it.
//  - purged (or volatile, mprotect) outside an access: SIGBUS.
static void vr_on_fault(int sig, siginfo_t *info, void *context) {
  int saved_errno = errno;
  uintptr_t addr = (uintptr_t)info->si_addr;
  // Only faults carry an address; a signal sent with kill() is never ours.
  int is_fault = sig == SIGBUS ? info->si_code == BUS_ADRERR : info->si_code == SEGV_ACCERR;
  int index = -1;
  vr_slot *r = is_fault ? slot_enter(addr, &index) : NULL;
  if (r == NULL) {
    chain(sig, info, context);
    errno = saved_errno;
    return;
  }
  int uffd = r->mechanism == VR_MECHANISM_USERFAULTFD;
  if (sig != (uffd ? SIGBUS : SIGSEGV)) {  // not a fault VRange causes
    slot_leave(r);
    chain(sig, info, context);
    errno = saved_errno;
    return;
  }
  uintptr_t page = addr & ~(r->page_size - 1);
  vr_scope *scope = scope_for(index, addr);
  int state = page_state(r, page);
  if (!(scope && scope->dirty_pass)) {
    while (state == VR_STATE_PURGING) {
      sched_yield();
      state = page_state(r, page);
    }
    if (uffd && state == VR_STATE_VOLATILE) state = record_reclaim(r, page);
  }
  int resume = 0;
  if (scope && fill_page(r, page) == 0) {
    if (scope->recorded < VR_SCOPE_RECORDS) scope->records[scope->recorded++] = page;
    scope->faults += 1;
    resume = 1;
  } else if (state == VR_STATE_NONVOLATILE && fill_page(r, page) == 0) {
    resume = 1;
  }
  slot_leave(r);
  if (!resume) {
    if (sig == SIGBUS) {
      chain(SIGBUS, info, context);
    } else {  // mprotect mechanism: report the purged page as SIGBUS
      siginfo_t bus;
      memset(&bus, 0, sizeof bus);
      bus.si_signo = SIGBUS;
      bus.si_code = BUS_ADRERR;
      bus.si_addr = (void *)addr;
      chain(SIGBUS, &bus, context);
    }
  }
  errno = saved_errno;
}

// MARK: - fork

// The kernel drops userfaultfd registrations in the child of fork() (without
// UFFD_FEATURE_EVENT_FORK, which needs CAP_SYS_PTRACE and a monitor): open a
// new descriptor and register every region again. Only raw syscalls here:
// the child of a multithreaded process may run async-signal-safe code only.
// A page locked (10) by another thread of the parent at the moment of fork
// has no owner in the child, where that thread does not exist: it would stay
// locked for ever. Such a page was volatile, so purge it: 10 -> 11, discarded.
static void resolve_orphaned_locks(vr_slot *r) {
  size_t pages = (r->end - r->base) / r->page_size;
  uint64_t *words = (uint64_t *)r->map;
  for (size_t w = 0; w < (pages + 31) / 32; w++) {
    uint64_t word = __atomic_load_n(&words[w], __ATOMIC_ACQUIRE);
    uint64_t locked = (word >> 1) & ~word & 0x5555555555555555ull;
    if (locked == 0) continue;
    __atomic_fetch_or(&words[w], locked, __ATOMIC_ACQ_REL);
    for (int bit = 0; bit < 64; bit += 2) {
      if (!(locked >> bit & 1)) continue;
      void *page = (void *)(r->base + (w * 32 + (size_t)bit / 2) * r->page_size);
      if (r->mechanism == VR_MECHANISM_MPROTECT) mprotect(page, r->page_size, PROT_NONE);
      madvise(page, r->page_size, MADV_DONTNEED);
    }
  }
}

static void at_fork_child(void) {
  int top = atomic_load(&slot_high_water);
  for (int i = 0; i < top; i++)
    if (atomic_load(&slots[i].state) == SLOT_LIVE) resolve_orphaned_locks(&slots[i]);
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
  atomic_store(&r->state, SLOT_RETIRING);  // seq_cst: see slot_enter
  while (atomic_load(&r->readers) != 0) sched_yield();
  atomic_store_explicit(&r->state, SLOT_FREE, memory_order_release);
}

// MARK: - Dirtying pass (kernel-driven mode)

size_t vr_dirty_pages(int slot, void *start, size_t count, size_t page_size,
                      uint64_t *faulted) {
  size_t lost = 0;
  if (count == 0) return 0;
  scope_push(slot, start, count * page_size, 1, VR_SCOPE_DEPTH + 1);  // cannot fail: reserved slot
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
