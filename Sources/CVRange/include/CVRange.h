// CVRange: the parts of VRange that Swift cannot express or must not run.
//
// Contract for every function here (as in mimalloc's prim.h): addresses and
// lengths are page-aligned and non-zero unless stated otherwise; functions
// return 0 on success or a positive errno value, never -1, and never touch
// the global errno they were given.
//
// Groups:
//  - syscall shims Swift cannot import (memfd_create, fallocate,
//    userfaultfd and its ioctls, gettid) and Linux constants it cannot see;
//  - the process-wide userfaultfd: opening, verifying, recovering;
//  - the lock-free table of registered regions and the per-thread access
//    scopes, read by the fault handler;
//  - the SIGBUS/SIGSEGV handler itself (async-signal-safe, chaining);
//  - test-only interleaving hooks (compiled in debug builds only).
#ifndef CVRANGE_H
#define CVRANGE_H

#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Constants Swift cannot import reliably

extern const int vr_MADV_DONTNEED;
extern const int vr_MADV_DONTNEED_LOCKED;
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
/// mmap of `length` bytes of private anonymous memory that is never mlocked,
/// even under mlockall(MCL_FUTURE) (which would populate and lock it): mapped
/// PROT_NONE, munlocked, then made read-write. MAP_NORESERVE.
int vr_map_anonymous_unlocked(size_t length, void **out);
/// madvise(MADV_DONTNEED) that also works on mlocked pages: on EINVAL it
/// tries MADV_DONTNEED_LOCKED (Linux 5.18), then munlock and MADV_DONTNEED.
int vr_discard(void *start, size_t length);
/// Unblocks SIGBUS and SIGSEGV in the calling thread (a blocked synchronous
/// fault would kill the process instead of reaching the handler); sets
/// *were_blocked to which of them were blocked (bit 0 SIGBUS, bit 1 SIGSEGV).
int vr_unblock_fault_signals(int *were_blocked);
/// Blocks again what vr_unblock_fault_signals unblocked.
int vr_reblock_fault_signals(int were_blocked);

// MARK: - userfaultfd

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
/// UFFDIO_COPY of `length` bytes from `source` to the missing page(s) at
/// `start` (EEXIST, the page present already, counts as done).
int vr_uffd_copy(int fd, void *start, const void *source, size_t length);
/// Whether `page` (mapped here, registered or not) really is there: mapped,
/// or in its file and now mapped (MADV_POPULATE_READ, no signal). 1 on
/// kernels without MADV_POPULATE_READ. UFFDIO_COPY and UFFDIO_ZEROPAGE count
/// EEXIST as filled only when this says so (else they return EEXIST).
int vr_page_is_there(void *page, size_t page_size);

/// The process-wide userfaultfd, opened on first use and kept at a high
/// descriptor number (F_DUPFD_CLOEXEC), out of the way of programs that
/// reuse low numbers. After fork() the child gets a new one, re-registered
/// over every region.
int vr_shared_uffd(int *fd_out);
/// The registration epoch: it moves on every time a region's userfaultfd
/// registration was lost (a program closed the descriptor, or a fork child
/// could not register a region again), so a caller that sees it change must
/// treat pages that relied on the registration as lost.
uint64_t vr_uffd_epoch(void);

// MARK: - Region table (read by the fault handler)

/// How a region turns a touch of a purged page into SIGBUS.
enum {
  VR_MECHANISM_USERFAULTFD = 1,  // missing page + UFFD_FEATURE_SIGBUS
  VR_MECHANISM_MPROTECT = 2,     // PROT_NONE page, SIGSEGV converted to SIGBUS
};

/// Region flags.
enum {
  /// Kernel-driven purging (MADV_FREE): a missing volatile page was
  /// reclaimed by the kernel. Without it a missing volatile page was never
  /// populated (filled lazily) and is intact.
  VR_REGION_KERNEL_DRIVEN = 1,
  /// A mapping of a shared file: its page states live in a sidecar shared
  /// with other processes, whose own recovery (intent records) resolves a
  /// purge that a dead process left half done. The at-fork child handler
  /// leaves its locked pages alone (they may be another process's).
  VR_REGION_SHARED = 2,
};

/// Page states as stored in the volatility map: two bits per page, 32 pages
/// per 64-bit word, page i in bits 2*(i%32) of word i/32. Must match
/// Sources/VRange/Map/PageState.swift.
enum {
  VR_STATE_NONVOLATILE = 0,  // 0b00
  VR_STATE_VOLATILE = 1,     // 0b01
  VR_STATE_LOCKED = 2,       // 0b10: held by an operation in flight
  VR_STATE_PURGED = 3,       // 0b11
};

/// Maximum number of regions registered at once in one process.
#define VR_MAX_REGIONS 4096

/// What the fault handler needs to know about a region.
typedef struct {
  void *base;
  size_t length;
  size_t page_size;
  /// The volatility map's state words.
  uint64_t *map;
  /// One discard generation per map word (see VolatilityMap).
  uint32_t *generations;
  /// Pages whose SIGBUS protection was given up to avoid a VMA split
  /// (mprotect at vm.max_map_count); the region owns it.
  uint64_t *coverage_lost;
  /// userfaultfd mechanism: one bit per chunk of `chunk_pages` pages, set
  /// once the chunk is registered (see vr_region_register_chunks).
  uint64_t *chunks;
  size_t chunk_pages;
  /// Where UFFDIO_ZEROPAGE does not work (hugetlbfs): `page_size` readable
  /// bytes of zeros that the handler fills a page from (UFFDIO_COPY); NULL
  /// elsewhere.
  const void *zero_source;
  int mechanism;  // VR_MECHANISM_*
  int flags;      // VR_REGION_*
  /// Shared-file regions only (NULL elsewhere). `pins`: this process's own
  /// record of the pages it pins, one bit a page from the region's first
  /// page, in private memory no peer can write: a page set here is filled,
  /// never reported purged, whatever the sidecar says. `intent`: the
  /// sidecar's purge control block (PurgeControl.swift: word 0 phase, 3..4
  /// the run being punched, 6 purges completed), read to tell a page a purge
  /// is punching from one it merely locked. `first_page`: the file page of
  /// the region's first page (the intent's ranges are file pages).
  const uint64_t *pins;
  const uint64_t *intent;
  size_t first_page;
  /// Shared-file regions only (NULL elsewhere): the mapping's stale-fill
  /// table, VR_STALE_WORDS words of this process's memory that the mapping
  /// owns. The handler records there a page whose fill may have landed after
  /// a purge's punch (it never punches the file itself: it cannot take the
  /// purge lock, so its punch could not be ordered against a pin); the
  /// library takes the records and punches the pages still purged, under
  /// the purge lock (VolatileFile.punchStaleFills). Word 0: set after every
  /// record ("something to take"); word 1: overflow (every page of the
  /// region); then VR_STALE_SLOTS slots, each 0 (free) or 1 + a page index
  /// from `base`. Only atomics: async-signal-safe, lock-free.
  uint64_t *stale;
} vr_region_info;

/// Slots of a stale-fill table (see vr_region_info.stale), and its words.
#define VR_STALE_SLOTS 16
#define VR_STALE_WORDS (2 + VR_STALE_SLOTS)

/// Installs the process-wide handlers (once), then publishes a region.
/// *slot_out receives the slot index. ENOSPC when VR_MAX_REGIONS are live.
/// A userfaultfd region is not registered with the userfaultfd yet: see
/// vr_region_register_chunks.
int vr_region_register(const vr_region_info *info, int *slot_out);
/// Registers the chunks of region `slot` that cover pages [first,
/// first+count) with the process-wide userfaultfd (MISSING mode), each once.
/// A chunk is populated first with MADV_POPULATE_READ (the shared zero page
/// at every missing page: page tables, no memory), so that no page of it is
/// missing when registration makes missing pages fault: memory that was
/// never purged never faults. Chunks that are never purged are never
/// registered and cost nothing. 0 or errno.
int vr_region_register_chunks(int slot, size_t first, size_t count);
/// Withdraws a region; returns once no handler is looking at it.
void vr_region_unregister(int slot);
/// Says that region `slot` is being closed: its memory is about to be
/// replaced by an empty mapping. From now on a fault there that would raise
/// SIGBUS resumes instead (the access is re-executed, and reads the empty
/// mapping once it is in place): an operation racing with close() must not
/// kill the process.
void vr_region_closing(int slot);
/// Counts a change of region `slot`'s mappings in flight (a discard, a
/// protection, a registration) until vr_region_change_end. close() waits
/// for the count to reach 0; the fork child resets it (the threads making
/// those changes do not exist there).
void vr_region_change_begin(int slot);
void vr_region_change_end(int slot);
/// The changes of region `slot`'s mappings in flight.
long vr_region_changes(int slot);
/// vr_region_change_begin unless the region is closing (vr_region_closing,
/// which close() calls before it waits for the count): returns 1 when the
/// change is counted (end it with vr_region_change_end), 0 when the region
/// is closing and nothing may change its mappings. Async-signal-safe.
int vr_region_change_enter(int slot);
/// After markNonVolatile's repopulation of pages [first, first+count) of
/// region `slot` (filled after the map said non-volatile): each page that
/// was marked volatile and purged again in between is purged again now
/// (discarded, protected: it must fault, not read the fill), as the fault
/// handler does for a page it filled. Waits for pages locked meanwhile.
void vr_region_repurge_filled(int slot, size_t first, size_t count);
/// markNonVolatile's repopulation in a kernel-driven region: fills each page
/// of [first, first+count) that is still non-volatile (00) with a zero page
/// under the page's lock, as the fault handler does; a page marked volatile
/// meanwhile is no longer its to fill (a zero page there would hide a
/// reclaim of the kernel). Returns the number of fills that failed.
int vr_region_repopulate_kernel_driven(int slot, size_t first, size_t count);
/// Verifies that region `slot` (userfaultfd mechanism) is registered with
/// the process-wide userfaultfd, and that this descriptor is still the one
/// that was opened (open, same device and inode). If the descriptor was lost
/// (a program closed every descriptor above 2), opens a new one and
/// registers every region with it again; if only this region is not
/// registered (a fork child failed to), registers it. *epoch_out receives
/// the registration epoch (see vr_uffd_epoch). Returns 0 when the region is
/// registered now, else the errno that prevented it.
int vr_region_check_registration(int slot, uint64_t *epoch_out);
/// How many times the at-fork child handler failed to restore a region's
/// userfaultfd registration in this process (0 in a healthy child).
unsigned vr_fork_restore_failures(void);

/// mprotect(PROT_READ|PROT_WRITE) over pages [first, first+count) of a
/// region, for when a plain mprotect failed with ENOMEM (vm.max_map_count:
/// unprotecting part of a protected run needs VMA splits). Widens the range
/// to the nearest volatile pages on either side (always accessible) or the
/// region's ends, so that the call only merges VMAs. Adds to *lost the
/// purged or locked pages it made accessible (they no longer raise SIGBUS).
/// Async-signal-safe.
int vr_unprotect_widened(const vr_region_info *info, size_t first, size_t count);

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
/// Called once an access whose scope ended with faults has purged its
/// filled pages again (or given up on a closed region): until then the
/// fork child purges again every purged page of region `slot`, since a
/// page filled for that access has no one left there to purge it.
void vr_scope_restored(int slot);

/// Kernel-driven markNonVolatile's settling pass over `count` pages from
/// `start`, which the caller holds locked (state 10). Each page is read
/// first: a page the kernel reclaimed faults there and is filled with the
/// shared zero page (no memory), and bit i of `faulted` (ceil(count/64)
/// words, zeroed by the caller) is set. A resident page that holds a
/// non-zero byte is then written (a compare-and-swap of a byte with itself),
/// which cancels its lazy free. Runs of resident all-zero pages are replaced
/// by the shared zero page (MADV_DONTNEED, UFFDIO_ZEROPAGE): their contents
/// stay, nothing is allocated (writing a zero-page mapping would allocate),
/// and nothing is left lazily freed. Runs in a scope slot reserved for it
/// (works inside any depth of accesses), with SIGBUS/SIGSEGV unblocked.
/// Returns the number of faulted pages.
size_t vr_dirty_pages(int slot, void *start, size_t count, size_t page_size,
                      uint64_t *faulted);

// MARK: - Recency clock

/// The purgers' coarse recency clock (see RecencyClock in Swift): a plain
/// global, so that reading it on the mark fast path is one load (a Swift
/// global with an initializer goes through a lazy-initialization accessor).
extern uint64_t vr_recency_tick;

static inline uint64_t vr_recency_now(void) {
  return __atomic_load_n(&vr_recency_tick, __ATOMIC_RELAXED);
}

static inline uint64_t vr_recency_advance(void) {
  return __atomic_add_fetch(&vr_recency_tick, 1, __ATOMIC_RELAXED);
}

// MARK: - Test support

/// Reads one byte; a function so that tests can touch memory the optimizer
/// cannot see through.
uint8_t vr_read_byte(const volatile void *address);
/// Raises `sig` in the calling thread (tgkill).
int vr_raise_in_thread(int sig);
/// Closes every descriptor from `first` up (close_range, Linux 5.9), as
/// daemons do: tests use it to take the userfaultfd away.
int vr_close_from(unsigned int first);

// MARK: - Test-only interleaving hooks
//
// In debug builds (VR_TEST_HOOKS, set by the manifest for the debug
// configuration only) the library calls vr_test_hook_fire at the critical
// windows below; a test arms rules that make a thread yield, or publish a
// flag and wait for another, at a point, to force an interleaving on any
// number of cores. Release builds compile the points out entirely.

enum {
  VR_HOOK_HANDLER_STATE_LOADED = 1,  // handler read a page's state (arg: page)
  VR_HOOK_HANDLER_WAITING = 2,       // handler waits on a locked page (arg: page)
  VR_HOOK_HANDLER_BEFORE_RECORD = 3, // between reading volatile and CAS to purged
  VR_HOOK_HANDLER_BEFORE_FILL = 4,   // about to fill a page (arg: page)
  VR_HOOK_HANDLER_AFTER_FILL = 5,    // filled a page (arg: page)
  VR_HOOK_MAP_BEFORE_CAS = 6,        // map: between a word's load and its CAS (arg: word)
  VR_HOOK_MAP_LOCKED = 7,            // map: a run is locked, before its work (arg: first page)
  VR_HOOK_MAP_BEFORE_RELEASE = 8,    // map: a run's work is done (arg: first page)
  VR_HOOK_ACCESS_AFTER_PRECHECK = 9, // optimistic access, before the body
  VR_HOOK_ACCESS_BEFORE_POSTCHECK = 10,
  VR_HOOK_DIRTY_PAGE = 11,           // settling pass, before a page (arg: page)
  VR_HOOK_UNMARK_CLEARED = 12,       // markNonVolatile cleared purged pages, before repopulating
  VR_HOOK_DISCARD = 13,              // a locked run is about to be discarded (arg: first byte)
  VR_HOOK_CLOSE_REPLACED = 14,       // close() replaced the memory (arg: base)
  VR_HOOK_CLOSE_WAITING = 15,        // close() waits for mapping changes in flight (arg: base)
  VR_HOOK_HANDLER_ENTERED = 16,     // a fault reached the handler, before the region lookup (arg: si_addr)
  VR_HOOK_TCACHE_INSIDE = 17,        // a thread cache's owner entered, before its entries (arg: 1 take, 2 put)
  VR_HOOK_TCACHE_DRAIN_FLAGGED = 18, // a drain stopped the caches holding its spans, after its barrier (arg: token)
  VR_HOOK_REGION_CHECKED = 19,       // a region's status, pageStates or pageOut passed its checks (arg: base)
  VR_HOOK_ALLOC_ENTERED = 20,        // allocator: an operation began, before its arena's lock (arg: AllocHookOp)
  VR_HOOK_ALLOC_LOCKED = 21,         // allocator: an operation holds its arena's lock (arg: AllocHookOp)
  VR_HOOK_ALLOC_SLAB_BUSY = 22,      // allocator: a slab page word is busy (arg: 1 first lock, 2 last unlock)
  VR_HOOK_ALLOC_FORK_PREPARE = 23,   // allocator: the at-fork prepare handler, before it takes the arenas' locks
  VR_HOOK_PURGER_LOOP = 24,         // a purger's thread: back from poll, before its sources and budget
  VR_HOOK_ALLOC_MAGAZINE_CENSUS = 25, // allocator: statistics read a magazine slot, under the arena's lock (arg: slot)
  VR_HOOK_HANDLER_BEFORE_DISCARD = 26, // shared file: the handler's fill may have landed after a punch, before it undoes it (arg: page)
  VR_HOOK_POINTS = 27,
};

/// Whether this build has the hook points compiled in.
int vr_test_hooks_available(void);
/// Arms rule `index` (0..15): when `point` fires with `arg` (0: any) on
/// thread `tid` (0: any), it yields `yields` times, sets the flags in
/// `set_flags`, then waits until any flag of `wait_any` is set (0: no wait),
/// at most `deadline_ms`, for `times` firings (-1: unlimited). Flags are
/// bits of one process-wide word.
void vr_test_hook_arm(int index, int point, uintptr_t arg, pid_t tid, int yields,
                      uint64_t set_flags, uint64_t wait_any, int deadline_ms, int times);
/// Disarms every rule and clears the flags and counters.
void vr_test_hook_reset(void);
/// The flag word; sets flags.
uint64_t vr_test_hook_flags(void);
void vr_test_hook_set_flags(uint64_t flags);
/// How often `point` fired since the last reset, and how many waits timed out.
uint64_t vr_test_hook_count(int point);
uint64_t vr_test_hook_timeouts(void);
/// Fires `point` (what the library calls at each point; exported for the
/// Swift side of the library).
void vr_test_hook_fire(int point, uintptr_t arg);
/// Test-only fault injection: the next `count` UFFDIO_REGISTER calls made
/// by the at-fork child handler fail (to test a child that could not
/// re-register).
void vr_test_fail_fork_reregistration(int count);

#ifdef __cplusplus
}
#endif

// MARK: - Shared volatile files (issue 7; added by the files branch)
// Declarations of the files layer live in their own header.
#include "vr_files.h"

// MARK: - Per-thread span caches of the allocator
#include "vr_tcache.h"

// MARK: - Purger shims (issue 8; added by the purger branch, kept in their own header)
#include "CVRangePurger.h"

// MARK: - Fork

/// The layers whose locks the at-fork handler takes, outermost first (the
/// order the library nests them in: a purger's pass holds its pass lock
/// while it calls into registered objects, a cache among them, whose purge
/// callbacks take shard locks). See atfork.c.
enum {
  VR_FORK_PURGER = 0,
  VR_FORK_CACHE = 1,
  VR_FORK_ALLOCATOR = 2,
  VR_FORK_THREAD_CACHES = 3,
  VR_FORK_FILES = 4,
  VR_FORK_REGIONS = 5,
  VR_FORK_LAYERS = 6
};
typedef void (*vr_fork_callback)(void);
/// Registers one layer's at-fork callbacks (any may be NULL); registering
/// the same three again does nothing. prepare runs outermost layer first,
/// parent and child innermost first. Returns 0, or -1 for a bad layer or a
/// full layer (8 callbacks). Call it at load only (from a constructor): a
/// registration racing fork() waits until fork() is done, and its caller
/// may hold a lock that fork()'s prepare waits for (issue 18).
int vr_atfork_register(int layer, vr_fork_callback prepare, vr_fork_callback parent,
                       vr_fork_callback child);

/// One live object's mutexes in a layer's at-fork list (atfork.c; the cache
/// and purger layers use them). The lists, their mutexes and the handlers
/// that walk them are atfork.c's, statically initialised: linking the first
/// object of a layer initialises nothing, so a fork() racing it leaves a
/// usable child. prepare takes the list's mutex, then each node's mutexes in
/// order; parent and child release them in reverse, then the list's mutex.
typedef struct vr_fork_node vr_fork_node;
struct vr_fork_node {
  /// Taken in this order before fork(), released in reverse after it.
  pthread_mutex_t **mutexes;
  int count;
  /// Optional, called by prepare on the forking thread: how many of the
  /// first mutexes that thread holds already (neither taken nor released).
  int (*held_by_forker)(const vr_fork_node *node);
  /// Optional, called in the child (every node's, before any mutex is
  /// released): resets what the threads that do not exist there left.
  void (*child)(vr_fork_node *node);
  /// The object's, for its callbacks.
  void *context;
  /// The list's: prepare's held_by_forker answer, and the links.
  int skipped;
  vr_fork_node *previous, *next;
};
/// Links `node` into `layer`'s list; never waits (while a fork() is in
/// progress, the node is queued and joins the list after it).
/// Returns 0, or -1 for a bad layer or node.
int vr_fork_link(int layer, vr_fork_node *node);
/// Unlinks a linked `node` (waits while a fork() is in progress).
void vr_fork_unlink(int layer, vr_fork_node *node);
/// How many fork()s this process descends from: bumped in each child
/// before any child handler runs.
long vr_fork_count(void);
/// Test-only: called by prepare with the layer's number before it takes
/// anything of that layer (NULL: none).
typedef void (*vr_fork_layer_hook)(int layer);
void vr_fork_set_test_hook(int layer, vr_fork_layer_hook hook);

#endif
