// CVRange: the parts of VRange that Swift cannot express or must not run.
//
// Contract for every function here (as in mimalloc's prim.h): addresses and
// lengths are page-aligned and non-zero unless stated otherwise; functions
// return 0 on success or a positive errno value, never -1, and never touch
// the global errno they were given.
//
// Three groups:
//  - syscall shims Swift cannot import (memfd_create, fallocate,
//    userfaultfd and its ioctls, gettid) and Linux constants it cannot see;
//  - the lock-free table of registered regions and the per-thread access
//    scopes, read by the fault handler;
//  - the SIGBUS/SIGSEGV handler itself (async-signal-safe, chaining).
#ifndef CVRANGE_H
#define CVRANGE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Constants Swift cannot import reliably

extern const int vr_MADV_DONTNEED;
extern const int vr_MADV_FREE;
extern const int vr_MADV_PAGEOUT;
extern const int vr_MADV_REMOVE;
extern const int vr_MADV_NOHUGEPAGE;
extern const int vr_MADV_POPULATE_WRITE;
extern const int vr_FALLOC_PUNCH_HOLE_KEEP_SIZE;
extern const unsigned int vr_MFD_CLOEXEC;
extern const unsigned int vr_MFD_ALLOW_SEALING;
extern const unsigned int vr_MFD_HUGETLB;

// MARK: - Syscall shims (0 or errno)

int vr_memfd_create(const char *name, unsigned int flags, int *fd_out);
int vr_fallocate(int fd, int mode, off_t offset, off_t length);
pid_t vr_gettid(void);

/// Opens a userfaultfd (non-blocking, close-on-exec, user-mode-only when the
/// kernel requires it) and performs the UFFDIO_API handshake asking for
/// UFFD_FEATURE_SIGBUS. On success stores the descriptor in *fd_out.
int vr_uffd_open(int *fd_out);
/// UFFDIO_REGISTER in MISSING mode.
int vr_uffd_register(int fd, void *start, size_t length);
/// UFFDIO_UNREGISTER.
int vr_uffd_unregister(int fd, void *start, size_t length);
/// UFFDIO_ZEROPAGE over [start, start+length). Pages that are already
/// present (EEXIST) are skipped, so the call fills every missing page.
/// *filled_out (may be NULL) receives the number of bytes newly mapped.
int vr_uffd_zeropage(int fd, void *start, size_t length, size_t *filled_out);
/// The same with the page size given (async-signal-safe: no sysconf).
int vr_uffd_zeropage_pages(int fd, void *start, size_t length, size_t page_size,
                           size_t *filled_out);

// MARK: - Region table (read by the fault handler)

/// How a region turns a touch of a purged page into SIGBUS.
enum {
  VR_MECHANISM_USERFAULTFD = 1,  // missing page + UFFD_FEATURE_SIGBUS
  VR_MECHANISM_MPROTECT = 2,     // PROT_NONE page, SIGSEGV converted to SIGBUS
};

/// Page states as stored in the volatility map: two bits per page, 32 pages
/// per 64-bit word, page i in bits 2*(i%32) of word i/32. Must match
/// Sources/VRange/Map/PageState.swift.
enum {
  VR_STATE_NONVOLATILE = 0,  // 0b00
  VR_STATE_VOLATILE = 1,     // 0b01
  VR_STATE_PURGING = 2,      // 0b10: locked by an operation in flight
  VR_STATE_PURGED = 3,       // 0b11
};

/// Maximum number of regions registered at once in one process.
#define VR_MAX_REGIONS 4096

/// Installs the process-wide handlers (once) and the at-fork child handler,
/// then publishes a region. `map` is the region's state words; `mechanism`
/// one of VR_MECHANISM_*. *slot_out receives the slot index.
int vr_region_register(void *base, size_t length, size_t page_size,
                       const uint64_t *map, int mechanism, int *slot_out);
/// Withdraws a region; waits for handlers running on it to leave.
void vr_region_unregister(int slot);
/// The process-wide userfaultfd, opened on first use (0 or errno). After
/// fork() the child gets a new one, re-registered over every region.
int vr_shared_uffd(int *fd_out);
/// How many times the at-fork child handler failed to restore a region's
/// userfaultfd registration in this process (0 in a healthy child).
unsigned vr_fork_restore_failures(void);

// MARK: - Optimistic access scopes (per thread)

#define VR_SCOPE_DEPTH 8
#define VR_SCOPE_RECORDS 16

/// Opens an access scope over [base, base+length) in region `slot`: a fault
/// there fills the page with zeros (userfaultfd) or makes it readable
/// (mprotect), is counted and recorded, and execution resumes.
/// Returns 0, or EOVERFLOW when scopes are nested deeper than VR_SCOPE_DEPTH.
int vr_scope_begin(int slot, const void *base, size_t length);
/// Closes the innermost scope. Copies up to VR_SCOPE_RECORDS page addresses
/// that faulted into `records`, sets *overflow when more faulted than that,
/// and returns the fault count.
unsigned vr_scope_end(uintptr_t *records, int *overflow);

/// Writes to one byte of each of `count` pages starting at `start` with an
/// atomic add of zero (which keeps the contents and cancels a lazy
/// MADV_FREE) inside an access scope; sets bit i of `faulted` (a bitmap of
/// ceil(count/64) words, zeroed by the caller) for every page that faulted,
/// i.e. that the kernel had reclaimed. Returns the number of such pages.
/// The caller holds the pages' locks (state 10); the pass uses a scope slot
/// reserved for it, so it works inside any depth of optimistic accesses.
size_t vr_dirty_pages(int slot, void *start, size_t count, size_t page_size,
                      uint64_t *faulted);

// MARK: - Test support

/// Reads one byte; a function so that tests can touch memory the optimizer
/// cannot see through.
uint8_t vr_read_byte(const volatile void *address);
/// Raises `sig` in the calling thread (tgkill).
int vr_raise_in_thread(int sig);

#ifdef __cplusplus
}
#endif

// MARK: - Purger shims (issue 8; added by the purger branch, kept in their own header)
#include "CVRangePurger.h"

#endif
