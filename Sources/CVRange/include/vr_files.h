// Shims for shared volatile files (issue 7): memfd flags and seals, open
// file description (OFD) locks, descriptor passing with SCM_RIGHTS, fstat,
// and the at-fork bookkeeping of the files layer. Same contract as
// CVRange.h: 0 or a positive errno, never -1, errno untouched.
#ifndef VR_FILES_H
#define VR_FILES_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Constants

extern const unsigned int vr_MFD_NOEXEC_SEAL;  // 0 where the headers lack it
extern const int vr_F_SEAL_SEAL;
extern const int vr_F_SEAL_SHRINK;
extern const int vr_F_SEAL_GROW;
extern const int vr_F_SEAL_WRITE;
extern const int vr_F_SEAL_FUTURE_WRITE;
extern const int vr_F_SEAL_EXEC;
extern const int vr_FALLOC_ALLOCATE;  // mode 0: allocate (populate) a range

// MARK: - Files

/// fcntl(fd, F_ADD_SEALS, seals).
int vr_add_seals(int fd, int seals);
/// fcntl(fd, F_GET_SEALS) into *seals_out.
int vr_get_seals(int fd, int *seals_out);

/// What fstat says about a descriptor.
typedef struct {
  uint64_t size;
  uint64_t inode;
  uint64_t device;
  uint64_t block_size;
  uint32_t mode;  // st_mode
  uint32_t hugetlbfs;  // fstatfs: 1 when the file is on hugetlbfs (MFD_HUGETLB)
} vr_file_info;

/// fstat(fd) and fstatfs(fd) into *info.
int vr_fstat(int fd, vr_file_info *info);
/// open("/proc/self/fd/<fd>", O_RDWR | O_CLOEXEC): a new open file
/// description of the same file.
int vr_reopen(int fd, int *fd_out);
/// pread of exactly `length` bytes at `offset` (short read: EIO).
int vr_pread_exact(int fd, void *buffer, size_t length, off_t offset);
/// pwrite of exactly `length` bytes at `offset`.
int vr_pwrite_exact(int fd, const void *buffer, size_t length, off_t offset);
/// mmap(NULL, length, PROT_READ|PROT_WRITE, (private ? MAP_PRIVATE :
/// MAP_SHARED) | (noreserve ? MAP_NORESERVE : 0), fd, offset).
int vr_map_file(int fd, size_t length, off_t offset, int private_mapping, int noreserve,
                void **out);
/// fcntl(fd, F_SETFD, cloexec ? FD_CLOEXEC : 0).
int vr_set_cloexec(int fd, int cloexec);

// MARK: - OFD locks (F_OFD_SETLK, F_OFD_SETLKW, F_OFD_GETLK)

/// Takes a write lock on byte `byte` of the file through this open file
/// description. `wait`: block (F_OFD_SETLKW, EINTR retried) or not
/// (F_OFD_SETLK: EAGAIN when another description holds it).
int vr_ofd_lock(int fd, off_t byte, int wait);
/// Releases it.
int vr_ofd_unlock(int fd, off_t byte);
/// F_OFD_GETLK for a write lock on `byte`: *held_out = 1 when another open
/// file description holds a lock on it, else 0. Locks held through `fd`'s
/// own description never conflict, so they read as 0.
int vr_ofd_probe(int fd, off_t byte, int *held_out);
/// F_OFD_GETLK for a write lock on bytes [start, start + count): *end_out =
/// the end of one lock another open file description holds that overlaps
/// them (the end of the file, INT64_MAX, for a lock to it), or 0 when none.
int vr_ofd_probe_range(int fd, off_t start, off_t count, int64_t *end_out);

// MARK: - Unix sockets and SCM_RIGHTS

/// socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0).
int vr_socketpair(int fds_out[2]);
/// sendmsg of `length` bytes of `payload` with `count` descriptors attached
/// (SCM_RIGHTS). count <= 253 (the kernel's SCM_MAX_FD). EINTR is retried; a short send is EIO.
int vr_send_fds(int socket, const void *payload, size_t length, const int *fds, int count);
/// recvmsg of up to `capacity` bytes with its descriptors (received
/// close-on-exec). *length_out: bytes received (0: the peer closed);
/// *count_out: descriptors the message carried; the first 8 are stored in
/// fds_out, any more are closed. EMSGSIZE, every received descriptor closed,
/// only when the control data did not fit (MSG_CTRUNC: more than the
/// kernel's 253 descriptors, or other control messages).
int vr_recv_fds(int socket, void *payload, size_t capacity, size_t *length_out,
                int fds_out[8], int *count_out);

// MARK: - fork

/// Incremented in the child of every fork() (an at-fork child handler
/// registered at program load, before any other VRange handler). Objects
/// remember it at creation to know whether they were inherited. A plain
/// global read inline: the shared-file marks check it on every call.
extern uint64_t vr_fork_generation_value;
static inline uint64_t vr_fork_generation(void) {
  return __atomic_load_n(&vr_fork_generation_value, __ATOMIC_RELAXED);
}
/// Descriptors the child of a fork must close at once: open file
/// descriptions whose OFD locks prove a process alive (a child holding them
/// would keep its dead parent's mapper slots alive). Returns ENOSPC when
/// more than 4096 are registered.
int vr_liveness_fd_add(int fd);
void vr_liveness_fd_remove(int fd);

/// The most locks one file hands to the at-fork handlers.
#define VR_FILE_FORK_LOCKS 8
/// One live file's entry in the files layer's at-fork list (opaque).
typedef struct vr_file_fork_entry vr_file_fork_entry;
/// A new entry, not yet in the list, its count of operations in flight 0
/// (NULL when out of memory).
vr_file_fork_entry *vr_file_fork_entry_new(void);
/// Adds the entry to the list with its file's `count` pthread mutexes, in
/// the order the at-fork prepare handler takes them (after every earlier
/// file's). The child resets its count of operations in flight, keeping
/// the two low bits (closed, released). EINVAL when count >
/// VR_FILE_FORK_LOCKS.
int vr_file_fork_link(vr_file_fork_entry *entry, pthread_mutex_t *const *locks, int count);
/// Removes it from the list (if linked) and frees it, before its mutexes
/// are destroyed.
void vr_file_fork_unregister(vr_file_fork_entry *entry);
/// The entry's count of operations in flight (used as an atomic).
uint64_t *vr_file_fork_uses(vr_file_fork_entry *entry);
/// How many times the files layer's at-fork prepare handler began (tests:
/// a thread about to fork has reached it).
uint64_t vr_files_prepare_count(void);

#ifdef __cplusplus
}
#endif
#endif
