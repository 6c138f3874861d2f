// The SIGBUS/SIGSEGV handler and its installation. Everything reachable from
// vr_on_fault is async-signal-safe: no allocation, no locks, no printing,
// only atomics, raw syscalls and memory that existed before the handler was
// installed.
//
// The rule it keeps: a thread never fills a page that another thread holds
// locked (state 10); it waits and looks again. The holder of a lock decides
// what the page's absence means (a purge made it absent; a settling pass
// looks for absence to find reclaimed pages).
//
// Shared files are the exception (handle_shared_page): their locks are held
// by other processes, which may be stopped or dead, so a fault never waits
// on one. It decides from recorded state alone, never from elapsed time:
// this process's private pin record, the page's state, and the purge
// intent record (Sources/VRange/File/PageProtocol.pml models it).
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static struct sigaction previous_bus, previous_segv;
static _Atomic int previous_bus_spent, previous_segv_spent;  // SA_RESETHAND one-shots used
static _Atomic int handlers_installed;  // 0 none, 1 installing, 2 done

static int is_ours(const struct sigaction *a) {
  return (a->sa_flags & SA_SIGINFO) && a->sa_sigaction == vr_on_fault;
}

// MARK: - Filling pages

// Makes `page` readable again: zero page (userfaultfd) or PROT_READ|WRITE.
// Returns 0, or an errno when the kernel refused (the access then cannot be
// resumed and is reported as a purged-page SIGBUS rather than looping).
static int fill_page(const vr_region_info *r, uintptr_t page) {
  VR_HOOK(VR_HOOK_HANDLER_BEFORE_FILL, page);
  int e;
  if (r->mechanism == VR_MECHANISM_USERFAULTFD) {
    size_t filled;
    int fd = atomic_load_explicit(&vr_uffd_fd, memory_order_acquire);
    // EEXIST with the page not there: another thread filled the page and a
    // purge discarded it again between the fill and the look (a race, seen
    // twice in the loaded full suite as a SIGBUS inside an optimistic
    // access). Fill again; a page that answers EEXIST every time (a guard
    // or poison marker, issue 18 5e) ends as an error after a bounded
    // number of tries, counted, not timed.
    e = EBADF;
    for (int tries = 0; fd >= 0 && tries < 64; tries++) {
      if (r->zero_source)  // hugetlbfs: no zero page
        e = vr_uffd_copy(fd, (void *)page, r->zero_source, r->page_size);
      else
        e = vr_uffd_zeropage_pages(fd, (void *)page, r->page_size, r->page_size, &filled);
      if (e != EEXIST) break;
    }
  } else {
    e = mprotect((void *)page, r->page_size, PROT_READ | PROT_WRITE) == 0 ? 0 : errno;
    if (e == ENOMEM) {
      // vm.max_map_count: unprotecting one page of a protected run needs
      // VMA splits. Unprotect the enclosing run instead (a merge).
      size_t index = (page - (uintptr_t)r->base) / r->page_size;
      e = vr_unprotect_widened(r, index, 1);
    }
  }
  VR_HOOK(VR_HOOK_HANDLER_AFTER_FILL, page);
  return e;
}

// A page filled outside a scope (non-volatile, or volatile and intact) that
// another thread purged meanwhile must not stay readable as zeros without a
// fault: discard it again under its lock, as a purge would. Counted as a
// change of the region's mappings, and nothing once it is closing: a
// protection of close()'s empty mapping would make the access fault for
// ever (the handler resumes the faults of a closing region).
static void rediscard(int index, const vr_region_info *r, uintptr_t page) {
  if (!vr_page_cas(r, page, VR_STATE_PURGED, VR_STATE_LOCKED)) return;
  vr_bump_generation(r, page);
  vr_region_discard_locked(index, r, page);
  vr_page_cas(r, page, VR_STATE_LOCKED, VR_STATE_PURGED);
}

// Fills `page` for a thread that found it in `state`, holding the page's
// lock (state -> 10 -> state) when `lock` is set. In a kernel-driven region
// an unlocked fill can come late: the state may have gone on (11 -> 00 by an
// unmark, 00 -> 01 by a mark) and the kernel reclaimed the page again, so
// that the fill maps a zero page over a reclaim nobody recorded, and the
// next unmark calls the page intact. Returns 1 when the state moved before
// the lock (look again); otherwise 0, with the fill's result in *error.
static int fill_locked(const vr_region_info *r, uintptr_t page, int state, int lock, int *error) {
  if (lock && !vr_page_cas(r, page, state, VR_STATE_LOCKED)) return 1;
  *error = fill_page(r, page);
  if (lock) vr_page_cas(r, page, VR_STATE_LOCKED, state);
  return 0;
}

// MARK: - Shared files

// Whether this process pins `page` (its private record, see vr_region_info).
static int pinned_here(const vr_region_info *r, size_t index) {
  if (!r->pins) return 0;
  return (int)((__atomic_load_n(&r->pins[index / 64], __ATOMIC_SEQ_CST) >> (index % 64)) & 1);
}

// Whether the purge intent record says that file page `file_page` is in the
// run being punched. Read as a seqlock over the purge counter (bumped after
// every punched run) and the phase, so that the range read belongs to the
// phase read: a punch run is recorded, by the holder of the purge lock,
// only over pages it holds locked and has decided to punch.
static int being_punched(const vr_region_info *r, size_t file_page) {
  if (!r->intent) return 0;
  for (int tries = 0; tries < 64; tries++) {
    uint64_t count = __atomic_load_n(&r->intent[6], __ATOMIC_SEQ_CST);
    uint64_t phase = __atomic_load_n(&r->intent[0], __ATOMIC_SEQ_CST);
    uint64_t lo = __atomic_load_n(&r->intent[3], __ATOMIC_SEQ_CST);
    uint64_t hi = __atomic_load_n(&r->intent[4], __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&r->intent[0], __ATOMIC_SEQ_CST) != phase ||
        __atomic_load_n(&r->intent[6], __ATOMIC_SEQ_CST) != count)
      continue;  // moved while read: read again
    return phase == 2 && lo <= file_page && file_page < hi;
  }
  return 0;  // a record that never holds still (a peer scribbling): no decision to punch
}

// Records page `index` of the region in its stale-fill table (see
// vr_region_info.stale): a free slot, or one that holds it already; when
// every slot is taken, the overflow flag (every page of the region). Then
// the "something to take" word, after the record: a taker clears that word
// first, then takes the slots, so a record it misses sets the word again.
static void stale_record(const vr_region_info *r, size_t index) {
  uint64_t *t = r->stale;
  if (!t) return;
  uint64_t want = (uint64_t)index + 1;
  int recorded = 0;
  for (int i = 0; i < VR_STALE_SLOTS && !recorded; i++) {
    uint64_t seen = __atomic_load_n(&t[2 + i], __ATOMIC_SEQ_CST);
    if (seen == 0)
      __atomic_compare_exchange_n(&t[2 + i], &seen, want, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    recorded = seen == 0 || seen == want;  // stored, or there already (not yet taken)
  }
  if (!recorded) __atomic_store_n(&t[1], 1, __ATOMIC_SEQ_CST);
  __atomic_store_n(&t[0], 1, __ATOMIC_SEQ_CST);
}

// Undoes, in this mapping only, a fill of a shared file's page that a purge
// punched (or is punching): the fill may have landed after the punch, and
// left the page present in the file, as zeros, while it reads purged (11).
// It never punches the file (MADV_REMOVE did, and punched the page a pin of
// another mapper had repopulated and written meanwhile: the handler cannot
// take the purge lock, so such a punch is never ordered against a pin). The
// page is recorded as a stale fill instead; the library punches it later
// under the purge lock if it is still purged, and leaves it alone if a pin
// repopulated it. Until then a raw touch of the page reads zeros instead of
// raising SIGBUS (in other mappings; under userfaultfd in this one too: the
// file's page is there, so nothing faults; RELIABILITY.md, "Known limits"); every
// report still decides from the page's state. The generation moves first:
// an optimistic access that read the fill sees a discard. mprotect: the
// page is protected again (it faults here again, and the handler decides);
// userfaultfd: this mapping's entry is dropped (MADV_DONTNEED; the file's
// page stays).
static void shared_undo_fill(const vr_region_info *r, uintptr_t page, size_t index) {
  vr_bump_generation(r, page);
  if (r->mechanism == VR_MECHANISM_MPROTECT)
    mprotect((void *)page, r->page_size, PROT_NONE);
  else
    madvise((void *)page, r->page_size, MADV_DONTNEED);
  stale_record(r, index);
}

// A fault on a shared file's page, decided from recorded state alone:
//  - this process pins it (private record): fill it, resume; a pinned page
//    never raises SIGBUS, whatever a peer wrote into the sidecar (it may
//    read zeros then: the pin's next report says so);
//  - purged (11), or locked (10) inside the run the intent record says is
//    being punched: SIGBUS; inside an optimistic access, fill and record it;
//  - present (00), or locked by a purge that has not decided to punch it
//    (a purge locks, then re-checks; a dead or stopped one never punches
//    it, its recovery unlocks it): fill it, resume. If a purge punched it
//    meanwhile (the fill may have landed after the punch), undo the fill
//    here and record it as a stale fill (shared_undo_fill), then look
//    again: still purged, SIGBUS (or a fill in an access); repopulated by
//    a pin meanwhile, the pinner's page is filled here and read.
// Nothing here waits on another process.
static int handle_shared_page(const vr_region_info *r, vr_scope *scope, uintptr_t page) {
  size_t index = (page - (uintptr_t)r->base) / r->page_size;
  size_t file_page = r->first_page + index;
  if (pinned_here(r, index)) return fill_page(r, page) == 0;
  for (int round = 0;; round++) {
    int state = vr_page_state(r, page);
    VR_HOOK(VR_HOOK_HANDLER_STATE_LOADED, page);
    if (state == VR_STATE_LOCKED && being_punched(r, file_page)) state = VR_STATE_PURGED;
    if (state == VR_STATE_PURGED || state == VR_STATE_VOLATILE) {  // 01 never occurs in a content map
      if (!scope) return 0;
      if (fill_page(r, page) != 0) return 0;
      vr_scope_record(scope, page);  // the access ends by punching it again
      return 1;
    }
    if (fill_page(r, page) != 0) return 0;
    int after = vr_page_state(r, page);
    if (after == VR_STATE_NONVOLATILE) return 1;
    if (after == VR_STATE_LOCKED && !being_punched(r, file_page)) return 1;  // its punch, if any, comes after the fill
    if (pinned_here(r, index)) return 1;  // pinned meanwhile by another thread: keep the fill
    // Punched, or being punched: the fill may have landed after the punch.
    VR_HOOK(VR_HOOK_HANDLER_BEFORE_DISCARD, page);
    shared_undo_fill(r, page, index);
    if (round >= 1000) return 0;  // a state a peer keeps scribbling: never loop for ever
  }
}

// What a fault on a registered page means, by the page's state. Returns 1 to
// resume the access, 0 to raise SIGBUS.
//  - in this thread's settling pass (its own locked pages): a reclaimed page;
//    fill it and count it.
//  - locked (10) by another thread: wait until it is released, look again.
//  - volatile but missing in a kernel-driven region: the kernel reclaimed
//    it; record it as purged (01 -> 11) before anything fills it.
//  - purged: inside an optimistic access, fill it, count it, resume;
//    outside, SIGBUS.
//  - non-volatile, or volatile and never populated (filled lazily), or
//    volatile behind a protection nobody holds: fill it and resume; if a
//    purge slipped in meanwhile, discard it again and look again.
static int handle_page(const vr_region_info *r, int index, uintptr_t page) {
  vr_scope *scope = vr_scope_for(index, page);
  if (scope && scope->dirty_pass) {
    if (fill_page(r, page) != 0) return 0;
    vr_scope_record(scope, page);
    return 1;
  }
  if (r->flags & VR_REGION_SHARED) return handle_shared_page(r, scope, page);
  int kernel_driven = r->flags & VR_REGION_KERNEL_DRIVEN;
  for (;;) {
    int state = vr_page_state(r, page);
    VR_HOOK(VR_HOOK_HANDLER_STATE_LOADED, page);
    if (state == VR_STATE_LOCKED) {
      VR_HOOK(VR_HOOK_HANDLER_WAITING, page);
      sched_yield();
      continue;
    }
    if (state == VR_STATE_VOLATILE && kernel_driven) {
      // The page was missing when it faulted: the kernel reclaimed it.
      // Record that as a purge does, under the page's lock: by now the page
      // may have been refilled, unmarked, written and marked volatile again
      // (this thread may have waited long), so it is discarded before it is
      // called purged, and a purged page always reads zeros. Bump first: an
      // access that reads the page after someone else filled it, and finds
      // it cleared again, still sees the discard.
      vr_bump_generation(r, page);
      VR_HOOK(VR_HOOK_HANDLER_BEFORE_RECORD, page);
      if (!vr_page_cas(r, page, VR_STATE_VOLATILE, VR_STATE_LOCKED)) continue;  // look again
      vr_region_discard_locked(index, r, page);
      vr_page_cas(r, page, VR_STATE_LOCKED, VR_STATE_PURGED);
      state = VR_STATE_PURGED;
    }
    if (state == VR_STATE_PURGED) {
      if (!scope) return 0;
      int error = 0;
      if (fill_locked(r, page, VR_STATE_PURGED, kernel_driven, &error) != 0) continue;  // look again
      if (error) return 0;
      // The access ends by discarding the page again (restoring SIGBUS).
      vr_scope_record(scope, page);
      return 1;
    }
    if (kernel_driven) {  // here: non-volatile (00)
      int error = 0;
      if (fill_locked(r, page, VR_STATE_NONVOLATILE, 1, &error) != 0) continue;  // look again
      return error ? 0 : 1;
    }
    if (fill_page(r, page) != 0) return 0;
    if (!(vr_page_state(r, page) & 2)) return 1;  // still 00 or 01: as it should be
    while (vr_page_state(r, page) == VR_STATE_LOCKED) sched_yield();
    if (vr_page_state(r, page) != VR_STATE_PURGED) return 1;
    rediscard(index, r, page);  // then look again: purged, so SIGBUS (or a fill in a scope)
  }
}

// MARK: - Chaining

// Dies of `sig` with the default action and the fault's details. With
// `refault`, the faulting access is re-executed and faults again with its
// real details (a real SIGBUS or SIGSEGV); otherwise the signal is queued to
// this thread with `info` (rt_tgsigqueueinfo keeps si_addr and si_code for
// the core dump) and unblocked.
static void die_of(int sig, siginfo_t *info, int refault) {
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigaction(sig, &dfl, NULL);
  if (refault) return;
  siginfo_t copy = *info;
  copy.si_signo = sig;
  syscall(SYS_rt_tgsigqueueinfo, getpid(), vr_gettid(), sig, &copy);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

// Calls handler `action` for `sig` with the signal mask the kernel would
// have given it: the interrupted code's mask (from `context`, not ours: this
// handler runs with the delivered signal blocked, and a handler that spawns
// a thread to read memory, as the Swift runtime's backtracer does, needs its
// faults deliverable), plus its sa_mask, plus `sig` unless SA_NODEFER.
static void call_handler(const struct sigaction *action, int sig, siginfo_t *info, void *context) {
  sigset_t mask = ((ucontext_t *)context)->uc_sigmask, saved;
  for (int s = 1; s < NSIG; s++)
    if (sigismember(&action->sa_mask, s) == 1) sigaddset(&mask, s);
  if (!(action->sa_flags & SA_NODEFER)) sigaddset(&mask, sig);
  pthread_sigmask(SIG_SETMASK, &mask, &saved);
  if (action->sa_flags & SA_SIGINFO)
    action->sa_sigaction(sig, info, context);
  else
    action->sa_handler(sig);
  pthread_sigmask(SIG_SETMASK, &saved, NULL);
}

// Hands `sig` on as the kernel would have delivered it. `converted`: a
// SIGSEGV of the mprotect mechanism turned into SIGBUS, which must follow
// the application's *current* SIGBUS disposition (it may have replaced
// VRange's handler since), and which recurs as SIGSEGV if a handler returns.
static void chain(int sig, siginfo_t *info, void *context, int converted) {
  struct sigaction target;
  int from_saved = 1;
  if (converted) {
    struct sigaction now;
    sigaction(SIGBUS, NULL, &now);
    if (!is_ours(&now)) {
      target = now;
      from_saved = 0;
    }
  }
  if (from_saved) {
    target = sig == SIGBUS ? previous_bus : previous_segv;
    _Atomic int *spent = sig == SIGBUS ? &previous_bus_spent : &previous_segv_spent;
    // One-shot (SA_RESETHAND): the first delivery uses it, later ones take
    // the default action.
    if ((target.sa_flags & SA_RESETHAND) && atomic_exchange(spent, 1)) {
      memset(&target, 0, sizeof target);
      target.sa_handler = SIG_DFL;
    }
  } else if (target.sa_flags & SA_RESETHAND) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGBUS, &dfl, NULL);  // as the kernel resets a one-shot handler
  }
  int is_fault = info->si_code > 0;
  void (*plain)(int) = target.sa_handler;  // shares storage with sa_sigaction
  if (plain == SIG_IGN && !is_fault) return;  // a sent signal the application ignores
  if (plain == SIG_DFL || plain == SIG_IGN) {   // a fault cannot be ignored
    die_of(sig, info, is_fault && !converted);
    return;
  }
  call_handler(&target, sig, info, context);
  if (converted) {
    // The access will fault again, as SIGSEGV on the protected page. A
    // handler that reset SIGBUS to the default action and returned (the
    // Swift runtime's, crash reporters) expects the fault to recur with the
    // default action: make that a SIGBUS, not a SIGSEGV.
    struct sigaction now;
    sigaction(SIGBUS, NULL, &now);
    if (now.sa_handler == SIG_DFL) die_of(SIGBUS, info, 0);
  }
}

// MARK: - The handler

void vr_on_fault(int sig, siginfo_t *info, void *context) {
  int saved_errno = errno;
  uintptr_t addr = (uintptr_t)info->si_addr;
  // Only faults carry an address; a signal sent with kill() is never ours.
  int is_fault = sig == SIGBUS ? info->si_code == BUS_ADRERR : info->si_code == SEGV_ACCERR;
  int index = -1;
  if (is_fault) VR_HOOK(VR_HOOK_HANDLER_ENTERED, addr);
  vr_slot *s = is_fault ? vr_slot_enter(addr, &index) : NULL;
  if (s == NULL) {
    chain(sig, info, context, 0);
    errno = saved_errno;
    return;
  }
  int uffd = s->info.mechanism == VR_MECHANISM_USERFAULTFD;
  if (sig != (uffd ? SIGBUS : SIGSEGV)) {  // not a fault VRange causes
    vr_slot_leave(s);
    chain(sig, info, context, 0);
    errno = saved_errno;
    return;
  }
  int resume = handle_page(&s->info, index, addr & ~(s->info.page_size - 1));
  // A region being closed is being replaced by an empty mapping: re-execute
  // the access (it reads zeros there) rather than kill the process.
  if (!resume && atomic_load(&s->closing)) {
    sched_yield();
    resume = 1;
  }
  vr_slot_leave(s);
  if (!resume) {
    if (uffd) {
      chain(SIGBUS, info, context, 0);
    } else {  // mprotect mechanism: report the purged page as SIGBUS
      siginfo_t bus;
      memset(&bus, 0, sizeof bus);
      bus.si_signo = SIGBUS;
      bus.si_code = BUS_ADRERR;
      bus.si_addr = (void *)addr;
      chain(SIGBUS, &bus, context, 1);
    }
  }
  errno = saved_errno;
}

// MARK: - Installation

int vr_install_handlers(void) {
  if (atomic_load_explicit(&handlers_installed, memory_order_acquire) == 2) return 0;
  int expected = 0;
  if (!atomic_compare_exchange_strong(&handlers_installed, &expected, 1)) {
    while (atomic_load_explicit(&handlers_installed, memory_order_acquire) != 2) sched_yield();
    return 0;
  }
  vr_register_at_fork();
  struct sigaction action, old;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = vr_on_fault;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigemptyset(&action.sa_mask);
  // Save what is there before installing, so that the handler never runs
  // with nothing saved to chain to. (A fork child redoing a half-done
  // installation may find ours in place already: never save ourselves.)
  static const int sigs[2] = {SIGBUS, SIGSEGV};
  for (int i = 0; i < 2; i++) {
    struct sigaction *prev = sigs[i] == SIGBUS ? &previous_bus : &previous_segv;
    if (sigaction(sigs[i], NULL, &old) != 0) goto failed;
    if (!is_ours(&old)) *prev = old;
    atomic_thread_fence(memory_order_seq_cst);
    if (sigaction(sigs[i], &action, &old) != 0) goto failed;
    if (!is_ours(&old)) *prev = old;  // changed in between: that one is the truth
  }
  atomic_store_explicit(&handlers_installed, 2, memory_order_release);
  return 0;
failed:;
  int e = errno;
  atomic_store(&handlers_installed, 0);
  return e;
}

void vr_handlers_after_fork(void) {
  // A thread of the parent was installing: it does not exist here. Start
  // over on next use (the installation tolerates finding ours in place).
  if (atomic_load(&handlers_installed) == 1) atomic_store(&handlers_installed, 0);
}
