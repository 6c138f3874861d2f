// The raw baselines. See CBench.h for the contract.
#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be set by the manifest's cSettings (memfd_create, fallocate)"
#endif
#include "CBench.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <linux/falloc.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

const int cb_MADV_NORMAL = MADV_NORMAL;
const int cb_MADV_DONTNEED = MADV_DONTNEED;
const int cb_MADV_FREE = MADV_FREE;
const int cb_MADV_NOHUGEPAGE = MADV_NOHUGEPAGE;

uint64_t cb_now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

// MARK: - Memory

void *cb_map(size_t length) {
  void *p = mmap(NULL, length, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return NULL;
  madvise(p, length, MADV_NOHUGEPAGE);
  return p;
}

int cb_unmap(void *start, size_t length) { return munmap(start, length) == 0 ? 0 : errno; }

int cb_madvise(void *start, size_t length, int advice) {
  return madvise(start, length, advice) == 0 ? 0 : errno;
}

uint64_t cb_madvise_loop(void *start, size_t length, int advice, size_t iterations) {
  uint64_t t0 = cb_now_ns();
  for (size_t i = 0; i < iterations; i++)
    if (madvise(start, length, advice) != 0) return 0;
  return cb_now_ns() - t0;
}

uint64_t cb_madvise_chunked(void *start, size_t length, size_t chunk, int advice) {
  uint64_t t0 = cb_now_ns();
  for (size_t at = 0; at < length; at += chunk) {
    size_t n = length - at < chunk ? length - at : chunk;
    if (madvise((char *)start + at, n, advice) != 0) return 0;
  }
  return cb_now_ns() - t0;
}

uint64_t cb_touch_pages(void *start, size_t length, size_t page_size) {
  volatile uint8_t *p = start;
  uint64_t t0 = cb_now_ns();
  for (size_t at = 0; at < length; at += page_size) p[at] = 1;
  return cb_now_ns() - t0;
}

// MARK: - Atomics

__attribute__((noinline)) uint64_t cb_cas_pair_loop(uint64_t *word, size_t iterations) {
  uint64_t t0 = cb_now_ns();
  for (size_t i = 0; i < iterations; i++) {
    uint64_t old = __atomic_load_n(word, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(word, &old, old | 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {}
    old = __atomic_load_n(word, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(word, &old, old & ~(uint64_t)1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {}
  }
  return cb_now_ns() - t0;
}

__attribute__((noinline)) uint64_t cb_cas_pair2_loop(uint64_t *words, size_t iterations) {
  uint64_t t0 = cb_now_ns();
  for (size_t i = 0; i < iterations; i++) {
    for (int w = 0; w < 2; w++) {
      uint64_t old = __atomic_load_n(&words[w], __ATOMIC_RELAXED);
      while (!__atomic_compare_exchange_n(&words[w], &old, old | 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {}
    }
    for (int w = 0; w < 2; w++) {
      uint64_t old = __atomic_load_n(&words[w], __ATOMIC_RELAXED);
      while (!__atomic_compare_exchange_n(&words[w], &old, old & ~(uint64_t)1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {}
    }
  }
  return cb_now_ns() - t0;
}

// MARK: - userfaultfd

int cb_uffd_open(int *fd_out) {
  int flags = O_CLOEXEC | O_NONBLOCK;
  long fd = syscall(SYS_userfaultfd, flags);
  if (fd < 0 && (errno == EPERM || errno == EINVAL))
    fd = syscall(SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY);
  if (fd < 0) return errno;
  struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_SIGBUS};
  if (ioctl((int)fd, UFFDIO_API, &api) != 0) {
    int e = errno;
    close((int)fd);
    return e;
  }
  *fd_out = (int)fd;
  return 0;
}

int cb_uffd_register(int fd, void *start, size_t length) {
  struct uffdio_register reg = {
      .range = {.start = (uintptr_t)start, .len = length},
      .mode = UFFDIO_REGISTER_MODE_MISSING,
  };
  return ioctl(fd, UFFDIO_REGISTER, &reg) == 0 ? 0 : errno;
}

uint64_t cb_uffd_zeropage(int fd, void *start, size_t length) {
  uintptr_t at = (uintptr_t)start, end = at + length;
  uint64_t t0 = cb_now_ns();
  while (at < end) {
    struct uffdio_zeropage z = {.range = {.start = at, .len = end - at}, .mode = 0};
    if (ioctl(fd, UFFDIO_ZEROPAGE, &z) == 0) break;
    if (errno != EAGAIN && errno != EINTR) return 0;
    if (z.zeropage > 0) at += (uintptr_t)z.zeropage;
  }
  return cb_now_ns() - t0;
}

int cb_close(int fd) { return close(fd) == 0 ? 0 : errno; }

// MARK: - Bare SIGBUS round trip

static int bus_fd = -1;
static uintptr_t bus_base, bus_end;
static size_t bus_pages, bus_page_size;
static struct sigaction bus_previous;
static _Atomic uint64_t bus_count;

// The whole round trip the kernel proposal's SIGBUS costs a user: the fault,
// the signal frame, one UFFDIO_ZEROPAGE, sigreturn. Not ours: hand back to
// the previous handler by reinstalling it; the fault then repeats into it.
static void bus_handler(int sig, siginfo_t *info, void *context) {
  (void)context;
  int saved = errno;
  uintptr_t addr = (uintptr_t)info->si_addr;
  if (sig == SIGBUS && addr >= bus_base && addr < bus_end) {
    struct uffdio_zeropage z = {
        .range = {.start = addr & ~(uintptr_t)(bus_page_size - 1), .len = bus_page_size}, .mode = 0};
    ioctl(bus_fd, UFFDIO_ZEROPAGE, &z);
    atomic_fetch_add_explicit(&bus_count, 1, memory_order_relaxed);
  } else {
    sigaction(SIGBUS, &bus_previous, NULL);
  }
  errno = saved;
}

int cb_sigbus_setup(size_t pages) {
  if (bus_fd >= 0) return 0;
  bus_page_size = (size_t)sysconf(_SC_PAGESIZE);
  size_t length = pages * bus_page_size;
  void *p = cb_map(length);
  if (!p) return errno;
  int fd, e = cb_uffd_open(&fd);
  if (e != 0) {
    munmap(p, length);
    return e;
  }
  e = cb_uffd_register(fd, p, length);
  if (e != 0) {
    close(fd);
    munmap(p, length);
    return e;
  }
  bus_fd = fd;
  bus_base = (uintptr_t)p;
  bus_end = bus_base + length;
  bus_pages = pages;
  return 0;
}

size_t cb_sigbus_pages(void) { return bus_pages; }
uint64_t cb_sigbus_count(void) { return atomic_load(&bus_count); }

uint64_t cb_sigbus_roundtrips(int *error_out) {
  *error_out = 0;
  if (bus_fd < 0) {
    *error_out = EBADF;
    return 0;
  }
  // Missing pages: a read of each raises SIGBUS in the kernel.
  if (madvise((void *)bus_base, bus_end - bus_base, MADV_DONTNEED) != 0) {
    *error_out = errno;
    return 0;
  }
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = bus_handler;
  action.sa_flags = SA_SIGINFO;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGBUS, &action, &bus_previous) != 0) {
    *error_out = errno;
    return 0;
  }
  uint64_t before = atomic_load(&bus_count);
  uint64_t t0 = cb_now_ns();
  for (uintptr_t at = bus_base; at < bus_end; at += bus_page_size)
    (void)*(volatile uint8_t *)at;
  uint64_t t = cb_now_ns() - t0;
  sigaction(SIGBUS, &bus_previous, NULL);
  if (atomic_load(&bus_count) - before != bus_pages) {
    *error_out = EPROTO;  // not every read faulted: the figure would lie
    return 0;
  }
  return t;
}

// MARK: - memfd punch-hole

int cb_memfd_map(size_t length, int *fd_out, void **map_out) {
  int fd = memfd_create("cbench", MFD_CLOEXEC);
  if (fd < 0) return errno;
  if (ftruncate(fd, (off_t)length) != 0) {
    int e = errno;
    close(fd);
    return e;
  }
  void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    close(fd);
    return e;
  }
  *fd_out = fd;
  *map_out = p;
  return 0;
}

uint64_t cb_punch_chunked(int fd, size_t length, size_t chunk) {
  uint64_t t0 = cb_now_ns();
  for (size_t at = 0; at < length; at += chunk) {
    size_t n = length - at < chunk ? length - at : chunk;
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)at, (off_t)n) != 0) return 0;
  }
  return cb_now_ns() - t0;
}

// MARK: - Threads

static cpu_set_t start_affinity;
static int start_affinity_saved;

// The affinity the process started with, read once before any pinning.
__attribute__((constructor)) static void save_start_affinity(void) {
  start_affinity_saved = sched_getaffinity(0, sizeof start_affinity, &start_affinity) == 0;
}

int cb_pin_to_cpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

int cb_unpin(void) {
  if (!start_affinity_saved) return ENOSYS;
  return pthread_setaffinity_np(pthread_self(), sizeof start_affinity, &start_affinity);
}

// MARK: - Helpers

uint8_t cb_read_byte(const void *address) { return *(const volatile uint8_t *)address; }

__attribute__((noinline)) void cb_write_each_page(void *start, size_t length, size_t page_size, uint8_t value) {
  volatile uint8_t *p = start;
  for (size_t at = 0; at < length; at += page_size) p[at] = value;
}

uint64_t cb_mmap_munmap_touched(size_t size, size_t page_size, size_t iterations) {
  uint64_t t0 = cb_now_ns();
  for (size_t i = 0; i < iterations; i++) {
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return 0;
    cb_write_each_page(m, size, page_size, (uint8_t)i);
    munmap(m, size);
  }
  return cb_now_ns() - t0;
}
