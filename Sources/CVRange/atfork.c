// The library's one at-fork handler, and the order in which every layer's
// locks are taken around fork() (glibc's malloc does the same for its own).
//
// fork() copies a multithreaded process with one thread: a lock another
// thread held at that moment has no owner in the child, and a busy bit it
// had set is never cleared. So each layer registers prepare / parent / child
// callbacks here. `prepare` takes the layer's locks (and waits out its busy
// bits); `parent` releases them; `child` releases or reinitialises them and
// resets per-object counts of operations in flight (those threads do not
// exist in the child).
//
// Order: prepare runs layer by layer from the outermost (VR_FORK_PURGER) to
// the innermost (VR_FORK_REGIONS), the order in which the library's own code
// nests these locks (a purger's pass lock is held while it calls into a
// registered object, a cache whose purge callback takes a shard's lock; a
// shard's lock is held while the allocator is called, which may take an
// arena's lock, and so on down); parent and child
// run from the innermost to the outermost. Within a layer, callbacks run in
// registration order (prepare) and in reverse (parent, child).
//
// One pthread_atfork registration, made at load, covers every layer: the
// order no longer depends on which part of the library happened to be used
// first.
#include "internal.h"

#include <pthread.h>

enum { CALLBACKS_PER_LAYER = 8 };

typedef struct {
  vr_fork_callback prepare, parent, child;
} fork_entry;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static fork_entry entries[VR_FORK_LAYERS][CALLBACKS_PER_LAYER];
static _Atomic int counts[VR_FORK_LAYERS];

int vr_atfork_register(int layer, vr_fork_callback prepare, vr_fork_callback parent,
                       vr_fork_callback child) {
  if (layer < 0 || layer >= VR_FORK_LAYERS) return -1;
  pthread_mutex_lock(&registry_lock);
  int n = atomic_load(&counts[layer]);
  for (int i = 0; i < n; i++) {
    fork_entry *e = &entries[layer][i];
    if (e->prepare == prepare && e->parent == parent && e->child == child) {
      pthread_mutex_unlock(&registry_lock);
      return 0;
    }
  }
  if (n == CALLBACKS_PER_LAYER) {
    pthread_mutex_unlock(&registry_lock);
    return -1;
  }
  entries[layer][n] = (fork_entry){prepare, parent, child};
  atomic_store(&counts[layer], n + 1);
  pthread_mutex_unlock(&registry_lock);
  return 0;
}

// The registry's own lock is taken first and released last: a registration
// racing fork() ends wholly before or wholly after it.
static void prepare_all(void) {
  pthread_mutex_lock(&registry_lock);
  for (int l = 0; l < VR_FORK_LAYERS; l++) {
    int n = atomic_load(&counts[l]);
    for (int i = 0; i < n; i++)
      if (entries[l][i].prepare) entries[l][i].prepare();
  }
}

static void parent_all(void) {
  for (int l = VR_FORK_LAYERS - 1; l >= 0; l--) {
    for (int i = atomic_load(&counts[l]) - 1; i >= 0; i--)
      if (entries[l][i].parent) entries[l][i].parent();
  }
  pthread_mutex_unlock(&registry_lock);
}

static void child_all(void) {
  for (int l = VR_FORK_LAYERS - 1; l >= 0; l--) {
    for (int i = atomic_load(&counts[l]) - 1; i >= 0; i--)
      if (entries[l][i].child) entries[l][i].child();
  }
  pthread_mutex_init(&registry_lock, NULL);
}

__attribute__((constructor)) static void atfork_install(void) {
  pthread_atfork(prepare_all, parent_all, child_all);
}
