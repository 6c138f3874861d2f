// CBench: the raw baselines VRange is measured against, written as the
// smallest C that does the job, so that each figure is the syscall, fault or
// instruction itself and not a wrapper around it.
//
// Conventions: functions return 0 or a positive errno unless stated
// otherwise; lengths are page-aligned; times are nanoseconds of
// CLOCK_MONOTONIC.
#ifndef CBENCH_H
#define CBENCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

extern const int cb_MADV_NORMAL;
extern const int cb_MADV_DONTNEED;
extern const int cb_MADV_FREE;
extern const int cb_MADV_NOHUGEPAGE;

/// CLOCK_MONOTONIC in nanoseconds.
uint64_t cb_now_ns(void);

// MARK: - Memory

/// mmap(PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE) plus
/// MADV_NOHUGEPAGE (as VRange maps its regions). NULL on failure.
void *cb_map(size_t length);
int cb_unmap(void *start, size_t length);
/// One madvise call.
int cb_madvise(void *start, size_t length, int advice);
/// `iterations` madvise calls on the same range; returns the nanoseconds
/// taken, or 0 if a call failed.
uint64_t cb_madvise_loop(void *start, size_t length, int advice, size_t iterations);
/// madvise over [start, start+length) in calls of at most `chunk` bytes;
/// returns the nanoseconds taken, or 0 if a call failed.
uint64_t cb_madvise_chunked(void *start, size_t length, size_t chunk, int advice);
/// Writes one byte in each page (a write fault per missing page); returns
/// the nanoseconds taken.
uint64_t cb_touch_pages(void *start, size_t length, size_t page_size);

// MARK: - Atomics

/// `iterations` times: two compare-and-swaps on `*word` (set a bit, clear
/// it), as a mark + unmark of one page would need at the very least.
/// Returns the nanoseconds taken.
uint64_t cb_cas_pair_loop(uint64_t *word, size_t iterations);
/// The same on two words (a pair of CAS on each): the floor of marking a
/// range that spans two map words. `words` points to two adjacent words.
uint64_t cb_cas_pair2_loop(uint64_t *words, size_t iterations);

// MARK: - userfaultfd

/// Opens a userfaultfd with UFFD_FEATURE_SIGBUS (plain, else user-mode-only,
/// as VRange does). *fd_out receives it.
int cb_uffd_open(int *fd_out);
int cb_uffd_register(int fd, void *start, size_t length);
/// One UFFDIO_ZEROPAGE ioctl over the whole range (repeated only on EAGAIN
/// or a partial result); every page must be missing. Returns the
/// nanoseconds taken, or 0 on failure.
uint64_t cb_uffd_zeropage(int fd, void *start, size_t length);
int cb_close(int fd);

// MARK: - Bare SIGBUS round trip

/// Prepares `pages` pages of a private anonymous mapping registered with
/// its own userfaultfd in MISSING mode with UFFD_FEATURE_SIGBUS, so that a
/// read of a missing page raises SIGBUS. Call once; 0 or errno.
int cb_sigbus_setup(size_t pages);
/// Installs the bare handler (UFFDIO_ZEROPAGE on si_addr's page, return),
/// saving whatever handler was there (VRange's, once a region exists),
/// discards the pages, reads one byte of each (one SIGBUS round trip each),
/// restores the previous handler. Returns the nanoseconds the reads took,
/// or 0 on failure (then *error_out holds the errno).
uint64_t cb_sigbus_roundtrips(int *error_out);
/// How many SIGBUS the bare handler has taken so far (sanity check).
uint64_t cb_sigbus_count(void);
/// Pages prepared by cb_sigbus_setup.
size_t cb_sigbus_pages(void);

// MARK: - memfd punch-hole

/// A memfd of `length` bytes mapped shared; *fd_out and *map_out receive them.
int cb_memfd_map(size_t length, int *fd_out, void **map_out);
/// fallocate(PUNCH_HOLE|KEEP_SIZE) over [0, length) in calls of at most
/// `chunk` bytes; returns the nanoseconds taken, or 0 on failure.
uint64_t cb_punch_chunked(int fd, size_t length, size_t chunk);

// MARK: - Threads

/// Pins the calling thread to CPU `cpu` (pthread_setaffinity_np).
int cb_pin_to_cpu(int cpu);
/// Lets the calling thread run on every CPU the process started with.
int cb_unpin(void);

// MARK: - Helpers

/// Reads one byte through a volatile pointer, so the read cannot be removed.
uint8_t cb_read_byte(const void *address);
/// Writes `value` to the first byte of each page of [start, start+length).
/// Not inlined: the allocator rows call this one function on every side
/// (VRange's buffer, glibc's block, a fresh mapping), so the touch is the
/// same machine code in each and the ratio is the allocators' alone.
void cb_write_each_page(void *start, size_t length, size_t page_size, uint8_t value);
/// mmap, cb_write_each_page, munmap; `iterations` times. Returns the
/// nanoseconds taken.
uint64_t cb_mmap_munmap_touched(size_t size, size_t page_size, size_t iterations);

// MARK: - Purger baselines (issue 8; implemented in cbench_purger.c)

/// cb_cas_pair_loop plus what VRange's markVolatile adds for the purger's
/// recency: a relaxed load of `*clock`, a compare with `*stamp`, and a
/// store there only when they differ. Returns the nanoseconds taken.
uint64_t cb_cas_pair_stamp_loop(uint64_t *word, const uint64_t *clock, uint64_t *stamp, size_t iterations);

#ifdef __cplusplus
}
#endif
#endif
