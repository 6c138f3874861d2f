// The process-wide userfaultfd: opened once, kept at a high descriptor
// number, verified by device and inode before it is relied on, and recovered
// (a new descriptor, every region registered again) when it was lost.
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

_Atomic int vr_uffd_fd = -1;
static _Atomic uint64_t uffd_dev, uffd_ino;   // identity of vr_uffd_fd
static _Atomic uint64_t registration_epoch = 1;
static _Atomic int recovering;                 // spin lock of the recovery
static _Atomic unsigned fork_restore_failures;
static _Atomic int fail_fork_registrations;    // test-only fault injection

// Lowest descriptor number the userfaultfd is moved to: programs that close
// or reuse "their" low descriptors leave it alone.
enum { HIGH_FD = 512 };

// MADV_POPULATE_READ and _WRITE (Linux 5.14); older headers lack them.
enum { MADV_POPULATE_READ_VALUE = 22, MADV_POPULATE_WRITE_VALUE = 23 };

// Maps the zero page at every missing page of a chunk about to be
// registered (a registered missing page faults), and writes its first page
// (allocating it zero-filled if missing: its contents never change): the
// chunk's mapping then has an anon_vma, without which fork() copies none of
// its page tables, and a fork child would find its never-written pages
// missing, faulting (issue 18, 2e). Returns 0 when MADV_POPULATE_READ is
// unsupported (Linux < 5.14: the caller fills missing pages with
// UFFDIO_ZEROPAGE after registering, which gives the anon_vma too).
int vr_uffd_populate_chunk(char *start, size_t length, size_t page_size) {
  if (madvise(start, length, MADV_POPULATE_READ_VALUE) != 0) return 0;
  while (madvise(start, page_size, MADV_POPULATE_WRITE_VALUE) != 0 && (errno == EINTR || errno == EAGAIN)) {}
  return 1;
}

// Opens a userfaultfd at a high number and records its identity. Raw
// syscalls only: the at-fork child handler uses it too.
static int open_high(int *fd_out) {
  int fd;
  int e = vr_uffd_open(&fd);
  if (e != 0) return e;
  int high = fcntl(fd, F_DUPFD_CLOEXEC, HIGH_FD);
  if (high >= 0) {
    close(fd);
    fd = high;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    e = errno;
    close(fd);
    return e;
  }
  atomic_store(&uffd_dev, (uint64_t)st.st_dev);
  atomic_store(&uffd_ino, (uint64_t)st.st_ino);
  *fd_out = fd;
  return 0;
}

static int still_ours(int fd) {
  struct stat st;
  return fd >= 0 && fstat(fd, &st) == 0 && (uint64_t)st.st_dev == atomic_load(&uffd_dev) &&
         (uint64_t)st.st_ino == atomic_load(&uffd_ino);
}

int vr_uffd_register_marked_chunks(const vr_slot *s, int fd) {
  const vr_region_info *r = &s->info;
  size_t pages = r->length / r->page_size;
  size_t chunks = (pages + r->chunk_pages - 1) / r->chunk_pages;
  size_t c = 0;
  while (c < chunks) {
    if (!(__atomic_load_n(&r->chunks[c / 64], __ATOMIC_ACQUIRE) >> (c % 64) & 1)) {
      c++;
      continue;
    }
    size_t end = c;  // a run of registered chunks: one call
    while (end < chunks && (__atomic_load_n(&r->chunks[end / 64], __ATOMIC_ACQUIRE) >> (end % 64) & 1)) end++;
    size_t first = c * r->chunk_pages;
    size_t last = end * r->chunk_pages < pages ? end * r->chunk_pages : pages;
    int e = vr_uffd_register(fd, (char *)r->base + first * r->page_size, (last - first) * r->page_size);
    if (e != 0) return e;
    c = end;
  }
  return 0;
}

// Registers the registered chunks of every live userfaultfd region with
// `fd`; returns the failures.
static unsigned register_all(int fd, int in_fork_child) {
  unsigned failures = 0;
  int top = atomic_load(&vr_slot_high_water);
  for (int i = 0; i < top; i++) {
    vr_slot *s = &vr_slots[i];
    // A closing region's memory is an empty mapping now: never registered.
    if (atomic_load(&s->state) != SLOT_LIVE || s->info.mechanism != VR_MECHANISM_USERFAULTFD ||
        atomic_load(&s->closing))
      continue;
    int ok;
    if (in_fork_child && atomic_load(&fail_fork_registrations) > 0) {
      atomic_fetch_sub(&fail_fork_registrations, 1);
      ok = 0;
    } else {
      ok = vr_uffd_register_marked_chunks(s, fd) == 0;
    }
    atomic_store(&s->registered, ok);
    if (!ok) failures++;
  }
  return failures;
}

// Opens the descriptor if there is none or it is no longer ours (recovery:
// every region registered again, the epoch moved on). Caller holds
// `recovering`. Returns 0 or the errno of opening.
static int ensure_descriptor(void) {
  int fd = atomic_load(&vr_uffd_fd);
  if (still_ours(fd)) return 0;
  // Never close the old number: if the registration was lost, that
  // descriptor is no longer ours (it may be another file by now).
  int had_one = atomic_load(&uffd_ino) != 0 || fd >= 0;
  int fresh;
  int e = open_high(&fresh);
  if (e == 0) {
    atomic_store(&vr_uffd_fd, fresh);
    register_all(fresh, 0);
  } else {
    atomic_store(&vr_uffd_fd, -1);
  }
  // The first opening is not a loss; any later one is.
  if (had_one) atomic_fetch_add(&registration_epoch, 1);
  return e;
}

static void lock_recovery(void) {
  while (atomic_exchange(&recovering, 1)) sched_yield();
}

static void unlock_recovery(void) { atomic_store(&recovering, 0); }

int vr_shared_uffd(int *fd_out) {
  int fd = atomic_load_explicit(&vr_uffd_fd, memory_order_acquire);
  if (fd < 0) {
    lock_recovery();
    int e = ensure_descriptor();
    unlock_recovery();
    if (e != 0) return e;
    fd = atomic_load(&vr_uffd_fd);
  }
  *fd_out = fd;
  return 0;
}

uint64_t vr_uffd_epoch(void) { return atomic_load(&registration_epoch); }

int vr_region_check_registration(int slot, uint64_t *epoch_out) {
  int e = 0;
  if (!still_ours(atomic_load(&vr_uffd_fd))) {
    lock_recovery();
    e = ensure_descriptor();
    unlock_recovery();
  }
  if (e == 0 && slot >= 0 && slot < VR_MAX_REGIONS) {
    vr_slot *s = &vr_slots[slot];
    if (!atomic_load(&s->registered) && !atomic_load(&s->closing)) {
      int fd = atomic_load(&vr_uffd_fd);
      e = fd < 0 ? EBADF : vr_uffd_register_marked_chunks(s, fd);
      if (e == 0) atomic_store(&s->registered, 1);
    }
  }
  *epoch_out = atomic_load(&registration_epoch);
  return e;
}

void vr_uffd_after_fork(void) {
  atomic_store(&recovering, 0);  // the thread holding it does not exist here
  int old = atomic_load(&vr_uffd_fd);
  if (old < 0) return;
  // The child's copy of the descriptor refers to the parent's context, and
  // the kernel did not copy its registrations into the child's mappings.
  close(old);
  int fd;
  if (open_high(&fd) != 0) {
    atomic_store(&vr_uffd_fd, -1);
    atomic_store(&uffd_ino, 0);
    int top = atomic_load(&vr_slot_high_water);
    for (int i = 0; i < top; i++) atomic_store(&vr_slots[i].registered, 0);
    atomic_fetch_add(&fork_restore_failures, 1);
    atomic_fetch_add(&registration_epoch, 1);
    return;
  }
  atomic_store(&vr_uffd_fd, fd);
  unsigned failures = register_all(fd, 1);
  if (failures) {
    // Those regions read reclaimed pages as zeros until registered again:
    // make the loss visible (kernel-driven regions then treat their
    // volatile pages as purged and register again before relying on it).
    atomic_fetch_add(&fork_restore_failures, failures);
    atomic_fetch_add(&registration_epoch, 1);
  }
}

unsigned vr_fork_restore_failures(void) { return atomic_load(&fork_restore_failures); }

void vr_test_fail_fork_reregistration(int count) { atomic_store(&fail_fork_registrations, count); }

int vr_region_register_chunks(int slot, size_t first, size_t count) {
  if (slot < 0 || slot >= VR_MAX_REGIONS || count == 0) return EINVAL;
  vr_slot *s = &vr_slots[slot];
  const vr_region_info *r = &s->info;
  size_t from = first / r->chunk_pages, to = (first + count - 1) / r->chunk_pages;
  int all = 1;
  for (size_t c = from; c <= to && all; c++)
    all = __atomic_load_n(&r->chunks[c / 64], __ATOMIC_ACQUIRE) >> (c % 64) & 1;
  if (all) return 0;  // the common case: nothing to do, no lock
  int fd;
  int e = vr_shared_uffd(&fd);
  if (e != 0) return e;
  while (atomic_exchange(&s->chunk_lock, 1)) sched_yield();
  size_t pages = r->length / r->page_size;
  for (size_t c = from; c <= to && e == 0; c++) {
    if (__atomic_load_n(&r->chunks[c / 64], __ATOMIC_ACQUIRE) >> (c % 64) & 1) continue;
    size_t lo = c * r->chunk_pages, hi = lo + r->chunk_pages < pages ? lo + r->chunk_pages : pages;
    char *start = (char *)r->base + lo * r->page_size;
    size_t length = (hi - lo) * r->page_size;
    // Zero page at every missing page, before registration makes a missing
    // page fault. Kernels before 5.14 lack MADV_POPULATE_READ: register
    // first, then fill the missing pages with UFFDIO_ZEROPAGE.
    int populated = vr_uffd_populate_chunk(start, length, r->page_size);
    e = vr_uffd_register(fd, start, length);
    if (e == 0 && !populated) e = vr_uffd_zeropage_pages(fd, start, length, r->page_size, NULL);
    if (e == 0) __atomic_fetch_or(&r->chunks[c / 64], (uint64_t)1 << (c % 64), __ATOMIC_RELEASE);
  }
  atomic_store(&s->chunk_lock, 0);
  return e;
}
