// Shims for shared volatile files: memfd seals, OFD locks, SCM_RIGHTS,
// fstat, and the files layer's at-fork child handler. See vr_files.h.
#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be set by the manifest's cSettings (F_OFD_*, memfd seals)"
#endif
#include "CVRange.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U  // Linux 6.3; older headers lack it
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020
#endif

const unsigned int vr_MFD_NOEXEC_SEAL = MFD_NOEXEC_SEAL;
const int vr_F_SEAL_SEAL = F_SEAL_SEAL;
const int vr_F_SEAL_SHRINK = F_SEAL_SHRINK;
const int vr_F_SEAL_GROW = F_SEAL_GROW;
const int vr_F_SEAL_WRITE = F_SEAL_WRITE;
const int vr_F_SEAL_FUTURE_WRITE = F_SEAL_FUTURE_WRITE;
const int vr_F_SEAL_EXEC = F_SEAL_EXEC;
const int vr_FALLOC_ALLOCATE = 0;

// MARK: - Files

int vr_add_seals(int fd, int seals) {
  return fcntl(fd, F_ADD_SEALS, seals) == 0 ? 0 : errno;
}

int vr_get_seals(int fd, int *seals_out) {
  int s = fcntl(fd, F_GET_SEALS);
  if (s < 0) return errno;
  *seals_out = s;
  return 0;
}

// HUGETLBFS_MAGIC of <linux/magic.h>.
#define VR_HUGETLBFS_MAGIC 0x958458f6

int vr_fstat(int fd, vr_file_info *info) {
  struct stat st;
  if (fstat(fd, &st) != 0) return errno;
  info->size = (uint64_t)st.st_size;
  info->inode = (uint64_t)st.st_ino;
  info->device = (uint64_t)st.st_dev;
  info->block_size = (uint64_t)st.st_blksize;
  info->mode = (uint32_t)st.st_mode;
  struct statfs fs;
  if (fstatfs(fd, &fs) != 0) return errno;
  info->hugetlbfs = fs.f_type == VR_HUGETLBFS_MAGIC;
  return 0;
}

int vr_reopen(int fd, int *fd_out) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  for (;;) {
    int r = open(path, O_RDWR | O_CLOEXEC);
    if (r >= 0) {
      *fd_out = r;
      return 0;
    }
    if (errno != EINTR) return errno;
  }
}

int vr_pread_exact(int fd, void *buffer, size_t length, off_t offset) {
  size_t done = 0;
  while (done < length) {
    ssize_t n = pread(fd, (char *)buffer + done, length - done, offset + (off_t)done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    done += (size_t)n;
  }
  return 0;
}

int vr_pwrite_exact(int fd, const void *buffer, size_t length, off_t offset) {
  size_t done = 0;
  while (done < length) {
    ssize_t n = pwrite(fd, (const char *)buffer + done, length - done, offset + (off_t)done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    done += (size_t)n;
  }
  return 0;
}

int vr_map_file(int fd, size_t length, off_t offset, int private_mapping, int noreserve,
                void **out) {
  int flags = (private_mapping ? MAP_PRIVATE : MAP_SHARED) | (noreserve ? MAP_NORESERVE : 0);
  void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, flags, fd, offset);
  if (p == MAP_FAILED) return errno;
  *out = p;
  return 0;
}

int vr_set_cloexec(int fd, int cloexec) {
  return fcntl(fd, F_SETFD, cloexec ? FD_CLOEXEC : 0) == 0 ? 0 : errno;
}

// MARK: - OFD locks

static void byte_lock(struct flock *l, short type, off_t byte) {
  memset(l, 0, sizeof *l);
  l->l_type = type;
  l->l_whence = SEEK_SET;
  l->l_start = byte;
  l->l_len = 1;
  l->l_pid = 0;  // required by OFD locks
}

int vr_ofd_lock(int fd, off_t byte, int wait) {
  struct flock l;
  for (;;) {
    byte_lock(&l, F_WRLCK, byte);
    if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &l) == 0) return 0;
    if (errno == EINTR) continue;
    return errno == EACCES ? EAGAIN : errno;
  }
}

int vr_ofd_unlock(int fd, off_t byte) {
  struct flock l;
  byte_lock(&l, F_UNLCK, byte);
  return fcntl(fd, F_OFD_SETLK, &l) == 0 ? 0 : errno;
}

int vr_ofd_probe(int fd, off_t byte, int *held_out) {
  struct flock l;
  byte_lock(&l, F_WRLCK, byte);
  if (fcntl(fd, F_OFD_GETLK, &l) != 0) return errno;
  *held_out = l.l_type != F_UNLCK;
  return 0;
}

int vr_ofd_probe_range(int fd, off_t start, off_t count, int64_t *end_out) {
  struct flock l;
  byte_lock(&l, F_WRLCK, start);
  l.l_len = count;
  if (fcntl(fd, F_OFD_GETLK, &l) != 0) return errno;
  if (l.l_type == F_UNLCK) *end_out = 0;
  else *end_out = l.l_len == 0 ? INT64_MAX : (int64_t)(l.l_start + l.l_len);
  return 0;
}

// MARK: - Unix sockets

// SCM_MAX_FD of the kernel: the most descriptors one message can carry.
#define VR_SCM_MAX_FDS 253

int vr_socketpair(int fds_out[2]) {
  return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds_out) == 0 ? 0 : errno;
}

int vr_send_fds(int socket, const void *payload, size_t length, const int *fds, int count) {
  if (count < 0 || count > VR_SCM_MAX_FDS || length == 0) return EINVAL;
  union {
    char buffer[CMSG_SPACE(VR_SCM_MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct iovec iov = {.iov_base = (void *)payload, .iov_len = length};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (count > 0) {
    msg.msg_control = control.buffer;
    msg.msg_controllen = CMSG_SPACE((size_t)count * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN((size_t)count * sizeof(int));
    memcpy(CMSG_DATA(c), fds, (size_t)count * sizeof(int));
  }
  for (;;) {
    ssize_t n = sendmsg(socket, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    return (size_t)n == length ? 0 : EIO;
  }
}

int vr_recv_fds(int socket, void *payload, size_t capacity, size_t *length_out,
                int fds_out[8], int *count_out) {
  // Room for as many descriptors as one message can carry, so that a
  // message with too many is counted exactly (and every one closed) instead
  // of being cut short by the kernel (MSG_CTRUNC).
  union {
    char buffer[CMSG_SPACE(VR_SCM_MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct iovec iov = {.iov_base = payload, .iov_len = capacity};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buffer;
  msg.msg_controllen = sizeof control.buffer;
  ssize_t n;
  for (;;) {
    n = recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
    if (n >= 0) break;
    if (errno != EINTR) return errno;
  }
  int count = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int *in = (int *)CMSG_DATA(c);
    for (size_t i = 0; i < k; i++) {
      if (count < 8) fds_out[count] = in[i];
      else close(in[i]);
      count++;
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    for (int i = 0; i < count && i < 8; i++) close(fds_out[i]);
    return EMSGSIZE;
  }
  *length_out = (size_t)n;
  *count_out = count;
  return 0;
}

// MARK: - fork

#define VR_MAX_LIVENESS_FDS 4096
uint64_t vr_fork_generation_value;
static _Atomic int liveness_fds[VR_MAX_LIVENESS_FDS];  // 0 = empty slot, else fd + 1

int vr_liveness_fd_add(int fd) {
  for (int i = 0; i < VR_MAX_LIVENESS_FDS; i++) {
    int empty = 0;
    if (atomic_compare_exchange_strong(&liveness_fds[i], &empty, fd + 1)) return 0;
  }
  return ENOSPC;
}

void vr_liveness_fd_remove(int fd) {
  for (int i = 0; i < VR_MAX_LIVENESS_FDS; i++) {
    int mine = fd + 1;
    if (atomic_compare_exchange_strong(&liveness_fds[i], &mine, 0)) return;
  }
}

// MARK: - fork: every live file's locks

// One entry per live VolatileFile: its pthread mutexes, in the order the
// files layer's prepare takes them, and its count of operations in flight.
// The list is intrusive (entries are allocated by their file, never in the
// child) and guarded by `files_lock`.
struct vr_file_fork_entry {
  vr_file_fork_entry *next, *prev;
  pthread_mutex_t *locks[VR_FILE_FORK_LOCKS];
  int lock_count;
  int linked;
  uint64_t uses;
};

static pthread_mutex_t files_lock = PTHREAD_MUTEX_INITIALIZER;
static vr_file_fork_entry *files_head;
static _Atomic uint64_t prepare_count;

uint64_t vr_files_prepare_count(void) { return atomic_load(&prepare_count); }

vr_file_fork_entry *vr_file_fork_entry_new(void) { return calloc(1, sizeof(vr_file_fork_entry)); }

int vr_file_fork_link(vr_file_fork_entry *e, pthread_mutex_t *const *locks, int count) {
  if (count < 0 || count > VR_FILE_FORK_LOCKS) return EINVAL;
  pthread_mutex_lock(&files_lock);
  for (int i = 0; i < count; i++) e->locks[i] = locks[i];
  e->lock_count = count;
  e->next = files_head;
  e->prev = NULL;
  if (files_head) files_head->prev = e;
  files_head = e;
  e->linked = 1;
  pthread_mutex_unlock(&files_lock);
  return 0;
}

void vr_file_fork_unregister(vr_file_fork_entry *e) {
  if (e == NULL) return;
  pthread_mutex_lock(&files_lock);
  if (e->linked) {
    if (e->prev) e->prev->next = e->next;
    else files_head = e->next;
    if (e->next) e->next->prev = e->prev;
  }
  pthread_mutex_unlock(&files_lock);
  free(e);
}

uint64_t *vr_file_fork_uses(vr_file_fork_entry *e) { return &e->uses; }

// Prepare: the list, then each file's locks in its order (purge, slots,
// process state, mappings, test hook: the order in which the files layer
// nests them). A thread inside a purge holds the purge mutex until the
// purge ends: fork waits for it, as glibc's malloc waits for an arena.
static void files_at_fork_prepare(void) {
  atomic_fetch_add(&prepare_count, 1);
  pthread_mutex_lock(&files_lock);
  for (vr_file_fork_entry *e = files_head; e; e = e->next)
    for (int i = 0; i < e->lock_count; i++) pthread_mutex_lock(e->locks[i]);
}

static void files_at_fork_parent(void) {
  for (vr_file_fork_entry *e = files_head; e; e = e->next)
    for (int i = e->lock_count - 1; i >= 0; i--) pthread_mutex_unlock(e->locks[i]);
  pthread_mutex_unlock(&files_lock);
}

// Runs in the child of fork() (the files layer of atfork.c, registered at
// load). Only async-signal-safe calls: the child of a multithreaded process
// may run nothing else. The locks prepare took belong to this thread: it
// releases them. Operations in flight on other threads do not exist here:
// every file's count of them restarts at zero (its closed and released bits
// stay; a use begun before fork by this thread ends without counting, see
// FileLifecycle.swift).
static void files_at_fork_child(void) {
  __atomic_add_fetch(&vr_fork_generation_value, 1, __ATOMIC_SEQ_CST);
  for (int i = 0; i < VR_MAX_LIVENESS_FDS; i++) {
    int v = atomic_exchange(&liveness_fds[i], 0);
    if (v != 0) close(v - 1);
  }
  for (vr_file_fork_entry *e = files_head; e; e = e->next) {
    __atomic_and_fetch(&e->uses, (uint64_t)3, __ATOMIC_SEQ_CST);
    for (int i = e->lock_count - 1; i >= 0; i--) pthread_mutex_unlock(e->locks[i]);
  }
  pthread_mutex_unlock(&files_lock);
}

__attribute__((constructor)) static void files_register_at_fork(void) {
  vr_atfork_register(VR_FORK_FILES, files_at_fork_prepare, files_at_fork_parent, files_at_fork_child);
}
