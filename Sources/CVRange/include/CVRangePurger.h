// CVRange shims for the purger's pressure sources (issue 8): calls Swift's
// Glibc module does not export. Same contract as CVRange.h: 0 or an errno.
#ifndef CVRANGE_PURGER_H
#define CVRANGE_PURGER_H

#ifdef __cplusplus
extern "C" {
#endif

/// eventfd(initial, EFD_CLOEXEC | EFD_NONBLOCK); *fd_out receives it.
int vr_eventfd(unsigned int initial, int *fd_out);

/// Names the calling thread (prctl(PR_SET_NAME); at most 15 bytes kept).
int vr_thread_set_name(const char *name);

#ifdef __cplusplus
}
#endif
#endif
