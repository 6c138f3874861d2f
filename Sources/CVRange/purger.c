// Shims for the purger's pressure sources (see CVRangePurger.h).
#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be set by the manifest's cSettings"
#endif
#include "CVRangePurger.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>

int vr_eventfd(unsigned int initial, int *fd_out) {
  int fd = eventfd(initial, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return errno;
  *fd_out = fd;
  return 0;
}

int vr_thread_set_name(const char *name) {
  return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0) == 0 ? 0 : errno;
}
