// Syscall shims: one small wrapper per call Swift cannot import, each
// returning 0 or a positive errno (the header's contract).
#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be set by the manifest's cSettings (memfd_create, fallocate)"
#endif
#include "CVRange.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

uint64_t vr_recency_tick = 1;

const int vr_MADV_DONTNEED = MADV_DONTNEED;
const int vr_MADV_DONTNEED_LOCKED = 24;  // Linux 5.18; older headers lack it
const int vr_MADV_FREE = MADV_FREE;
const int vr_MADV_PAGEOUT = 21;          // MADV_PAGEOUT, Linux 5.4; older headers lack it
const int vr_MADV_REMOVE = MADV_REMOVE;
const int vr_MADV_NOHUGEPAGE = MADV_NOHUGEPAGE;
const int vr_MADV_POPULATE_WRITE = 23;   // MADV_POPULATE_WRITE, Linux 5.14
const int vr_FALLOC_PUNCH_HOLE_KEEP_SIZE = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
const unsigned int vr_MFD_CLOEXEC = MFD_CLOEXEC;
const unsigned int vr_MFD_ALLOW_SEALING = MFD_ALLOW_SEALING;
const unsigned int vr_MFD_HUGETLB = MFD_HUGETLB;

int vr_memfd_create(const char *name, unsigned int flags, int *fd_out) {
  int fd = memfd_create(name, flags);
  if (fd < 0) return errno;
  *fd_out = fd;
  return 0;
}

int vr_fallocate(int fd, int mode, off_t offset, off_t length) {
  for (;;) {
    if (fallocate(fd, mode, offset, length) == 0) return 0;
    if (errno != EINTR) return errno;
  }
}

pid_t vr_gettid(void) { return (pid_t)syscall(SYS_gettid); }

int vr_map_anonymous_unlocked(size_t length, void **out) {
  // PROT_NONE first: under mlockall(MCL_FUTURE) a readable mapping would be
  // populated and locked at once; an inaccessible one is not. Then unlock
  // it (clearing VM_LOCKED) and open it.
  void *p = mmap(NULL, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return errno;
  int e = 0;
  if (munlock(p, length) != 0 && errno != ENOMEM && errno != EPERM) e = errno;
  if (e == 0 && mprotect(p, length, PROT_READ | PROT_WRITE) != 0) e = errno;
  if (e != 0) {
    munmap(p, length);
    return e;
  }
  *out = p;
  return 0;
}

int vr_discard(void *start, size_t length) {
  if (madvise(start, length, MADV_DONTNEED) == 0) return 0;
  if (errno != EINVAL) return errno;
  // Locked pages (mlock, mlockall after the region was made): MADV_DONTNEED
  // refuses them. MADV_DONTNEED_LOCKED (Linux 5.18) does not.
  if (madvise(start, length, vr_MADV_DONTNEED_LOCKED) == 0) return 0;
  if (munlock(start, length) != 0) return errno;
  return madvise(start, length, MADV_DONTNEED) == 0 ? 0 : errno;
}

int vr_unblock_fault_signals(int *were_blocked) {
  sigset_t set, old;
  sigemptyset(&set);
  sigemptyset(&old);
  sigaddset(&set, SIGBUS);
  sigaddset(&set, SIGSEGV);
  // One call: unblocks both and reports what was blocked before.
  int e = pthread_sigmask(SIG_UNBLOCK, &set, &old);
  if (e != 0) return e;
  *were_blocked = (sigismember(&old, SIGBUS) ? 1 : 0) | (sigismember(&old, SIGSEGV) ? 2 : 0);
  return 0;
}

int vr_reblock_fault_signals(int were_blocked) {
  if (were_blocked == 0) return 0;
  sigset_t set;
  sigemptyset(&set);
  if (were_blocked & 1) sigaddset(&set, SIGBUS);
  if (were_blocked & 2) sigaddset(&set, SIGSEGV);
  return pthread_sigmask(SIG_BLOCK, &set, NULL);
}

// Used by the fault handler and the at-fork child handler too, so it only
// makes raw syscalls and reports through its return value.
// Shared memfd (and hugetlbfs) mappings are registered too (shared volatile
// files): ask for UFFD_FEATURE_MISSING_SHMEM / _HUGETLBFS where the kernel
// knows them (4.11); a kernel that refuses the request (EINVAL, and a failed
// UFFDIO_API may not be retried on the same descriptor) gets a new
// descriptor asking for UFFD_FEATURE_SIGBUS alone.
static long uffd_new(void) {
  int flags = O_CLOEXEC | O_NONBLOCK;
  // Try plain first (root, or vm.unprivileged_userfaultfd=1), then
  // user-mode-only, which unprivileged processes may always use and which
  // is all VRange needs: the faults it handles come from user space.
  long fd = syscall(SYS_userfaultfd, flags);
  if (fd < 0 && (errno == EPERM || errno == EINVAL))
    fd = syscall(SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY);
  return fd;
}

int vr_uffd_open(int *fd_out) {
  long fd = uffd_new();
  if (fd < 0) return errno;
  struct uffdio_api api = {
      .api = UFFD_API,
      .features = UFFD_FEATURE_SIGBUS | UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MISSING_HUGETLBFS,
  };
  if (ioctl((int)fd, UFFDIO_API, &api) != 0) {
    int e = errno;
    close((int)fd);
    if (e != EINVAL) return e;
    fd = uffd_new();
    if (fd < 0) return errno;
    api = (struct uffdio_api){.api = UFFD_API, .features = UFFD_FEATURE_SIGBUS};
    if (ioctl((int)fd, UFFDIO_API, &api) != 0) {
      e = errno;
      close((int)fd);
      return e;
    }
  }
  if (!(api.features & UFFD_FEATURE_SIGBUS)) {
    close((int)fd);
    return ENOTSUP;
  }
  *fd_out = (int)fd;
  return 0;
}

int vr_uffd_register(int fd, void *start, size_t length) {
  struct uffdio_register reg = {
      .range = {.start = (uintptr_t)start, .len = length},
      .mode = UFFDIO_REGISTER_MODE_MISSING,
  };
  return ioctl(fd, UFFDIO_REGISTER, &reg) == 0 ? 0 : errno;
}

int vr_uffd_unregister(int fd, void *start, size_t length) {
  struct uffdio_range range = {.start = (uintptr_t)start, .len = length};
  return ioctl(fd, UFFDIO_UNREGISTER, &range) == 0 ? 0 : errno;
}

// UFFDIO_COPY and UFFDIO_ZEROPAGE answer EEXIST when the page is mapped
// here already, or is in the file already (another process filled it). Then
// the access can go on only if the page really is there: MADV_POPULATE_READ
// (Linux 5.14) maps it from the file without a signal, and fails (EFAULT)
// where it is missing or unusable (a guard or poison marker answers EEXIST
// too), so the caller raises SIGBUS instead of resuming an access that
// faults again for ever. A kernel without MADV_POPULATE_READ (EINVAL) keeps
// the old reading: present.
int vr_page_is_there(void *page, size_t page_size) {
  if (madvise(page, page_size, 22 /* MADV_POPULATE_READ */) == 0) return 1;
  return errno == EINVAL;
}

static int eexist_means_present(uintptr_t page, size_t page_size) {
  return vr_page_is_there((void *)page, page_size);
}

int vr_uffd_zeropage_pages(int fd, void *start, size_t length, size_t page_size,
                           size_t *filled_out) {
  uintptr_t at = (uintptr_t)start, end = at + length;
  size_t filled = 0;
  while (at < end) {
    struct uffdio_zeropage z = {.range = {.start = at, .len = end - at}, .mode = 0};
    if (ioctl(fd, UFFDIO_ZEROPAGE, &z) == 0) {
      filled += (size_t)z.zeropage;
      break;
    }
    int e = errno;
    // z.zeropage holds the bytes done before the failure (or -errno).
    size_t done = z.zeropage > 0 ? (size_t)z.zeropage : 0;
    filled += done;
    at += done;
    if (e == EEXIST) {
      if (!eexist_means_present(at, page_size)) {
        if (filled_out) *filled_out = filled;
        return EEXIST;
      }
      at += page_size;  // that page is present already: skip it
    } else if (e != EAGAIN && e != EINTR) {
      if (filled_out) *filled_out = filled;
      return e;
    }
  }
  if (filled_out) *filled_out = filled;
  return 0;
}

int vr_uffd_copy(int fd, void *start, const void *source, size_t length) {
  for (;;) {
    struct uffdio_copy c = {.dst = (uintptr_t)start, .src = (uintptr_t)source, .len = length, .mode = 0};
    if (ioctl(fd, UFFDIO_COPY, &c) == 0) return 0;
    if (errno == EEXIST) return eexist_means_present((uintptr_t)start, length) ? 0 : EEXIST;
    if (errno != EAGAIN && errno != EINTR) return errno;
  }
}

int vr_uffd_zeropage(int fd, void *start, size_t length, size_t *filled_out) {
  return vr_uffd_zeropage_pages(fd, start, length, (size_t)sysconf(_SC_PAGESIZE), filled_out);
}

uint8_t vr_read_byte(const volatile void *address) {
  return *(const volatile uint8_t *)address;
}

int vr_raise_in_thread(int sig) {
  return syscall(SYS_tgkill, getpid(), vr_gettid(), sig) == 0 ? 0 : errno;
}

int vr_close_from(unsigned int first) {
  return syscall(SYS_close_range, first, ~0U, 0) == 0 ? 0 : errno;
}
