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
// run from the innermost to the outermost. Within a layer, prepare takes
// the layer's list (below) first, then runs the callbacks in registration
// order; parent and child run them in reverse, then release the list.
//
// One pthread_atfork registration, made at load, covers every layer: the
// order no longer depends on which part of the library happened to be used
// first.
//
// Layers whose objects come and go (caches, purgers) keep their live
// objects' mutexes in a list per layer, here: the lists and their mutexes
// are static and initialised at compile time, and the handlers that walk
// them are part of the registration made at load. Nothing on the fork path
// is initialised lazily: a layer's registry created with its first object
// (a Swift lazy static registering handlers under registry_lock) left a
// child of a fork() racing that first creation with the once-initialiser
// of a thread that does not exist there, half done: its first cache or
// purger hung (issue 18).
#include "internal.h"

#include <pthread.h>

enum { CALLBACKS_PER_LAYER = 8 };

typedef struct {
  vr_fork_callback prepare, parent, child;
} fork_entry;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static fork_entry entries[VR_FORK_LAYERS][CALLBACKS_PER_LAYER];
static _Atomic int counts[VR_FORK_LAYERS];

// A layer's live objects (vr_fork_link), newest first. A node linked while
// the list's mutex is busy (a fork's prepare holds it while it waits for a
// lock that the linking thread may hold: a purger made inside a purge
// callback) is pushed onto `pending` instead, without waiting, and moved
// into the list by the next thread that holds the mutex. A fork in between
// does not take its mutexes: its object is not yet its maker's to share
// (the maker is inside init), and in the child they are reinitialised.
typedef struct {
  pthread_mutex_t lock;  // guards head; held from prepare to parent / child
  vr_fork_node *head;
  _Atomic(vr_fork_node *) pending;  // a stack, newest first, linked by `next`
  _Atomic(vr_fork_layer_hook) test_hook;
} fork_list;

#define FORK_LIST_INIT {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, NULL}
static fork_list lists[VR_FORK_LAYERS] = {FORK_LIST_INIT, FORK_LIST_INIT, FORK_LIST_INIT,
                                          FORK_LIST_INIT, FORK_LIST_INIT, FORK_LIST_INIT};
_Static_assert(VR_FORK_LAYERS == 6, "one FORK_LIST_INIT per layer");

static _Atomic long fork_count;

static void insert(fork_list *list, vr_fork_node *node) {
  node->previous = NULL;
  node->next = list->head;
  if (list->head) list->head->previous = node;
  list->head = node;
}

// The pending nodes, oldest first (linked by `next`); `pending` is emptied.
static vr_fork_node *take_pending(fork_list *list) {
  vr_fork_node *n = atomic_exchange(&list->pending, NULL), *oldest = NULL;
  while (n) {
    vr_fork_node *next = n->next;
    n->next = oldest;
    oldest = n;
    n = next;
  }
  return oldest;
}

// Under the list's mutex: the pending nodes join the list.
static void drain_pending(fork_list *list) {
  for (vr_fork_node *n = take_pending(list), *next; n; n = next) {
    next = n->next;
    insert(list, n);
  }
}

int vr_fork_link(int layer, vr_fork_node *node) {
  if (layer < 0 || layer >= VR_FORK_LAYERS || !node || node->count < 0) return -1;
  fork_list *list = &lists[layer];
  node->skipped = 0;
  node->previous = NULL;
  if (pthread_mutex_trylock(&list->lock) == 0) {
    drain_pending(list);
    insert(list, node);
    pthread_mutex_unlock(&list->lock);
    return 0;
  }
  node->next = atomic_load(&list->pending);
  while (!atomic_compare_exchange_weak(&list->pending, &node->next, node)) {
  }
  return 0;
}

void vr_fork_unlink(int layer, vr_fork_node *node) {
  if (layer < 0 || layer >= VR_FORK_LAYERS || !node) return;
  fork_list *list = &lists[layer];
  pthread_mutex_lock(&list->lock);
  drain_pending(list);
  if (node->previous) node->previous->next = node->next;
  else list->head = node->next;
  if (node->next) node->next->previous = node->previous;
  node->previous = node->next = NULL;
  pthread_mutex_unlock(&list->lock);
}

long vr_fork_count(void) { return atomic_load_explicit(&fork_count, memory_order_relaxed); }

void vr_fork_set_test_hook(int layer, vr_fork_layer_hook hook) {
  if (layer >= 0 && layer < VR_FORK_LAYERS) atomic_store(&lists[layer].test_hook, hook);
}

// Takes the list's mutex, then the nodes' mutexes (a thread inside an
// operation of the object finishes it first) index by index: every node's
// first mutex, then every node's second, and so on, each round from the
// oldest node to the newest. A node's first mutex is its outermost (a
// purger's pass lock, held while a purge callback reaches into other
// objects of the layer): a pass of one purger that registers with, wakes,
// makes or drops another (an inner mutex of it), or runs a pass of a newer
// one, never waits for a fork that waits for that pass (issue 18, r3 E).
static void list_prepare(int layer) {
  fork_list *list = &lists[layer];
  vr_fork_layer_hook hook = atomic_load(&list->test_hook);
  if (hook) hook(layer);
  pthread_mutex_lock(&list->lock);
  drain_pending(list);
  vr_fork_node *oldest = NULL;
  int rounds = 0;
  for (vr_fork_node *n = list->head; n; n = n->next) {
    n->skipped = n->held_by_forker ? n->held_by_forker(n) : 0;
    if (n->count > rounds) rounds = n->count;
    oldest = n;
  }
  for (int i = 0; i < rounds; i++)
    for (vr_fork_node *n = oldest; n; n = n->previous)
      if (i >= n->skipped && i < n->count) pthread_mutex_lock(n->mutexes[i]);
}

static void list_release(int layer) {
  fork_list *list = &lists[layer];
  for (vr_fork_node *n = list->head; n; n = n->next) {
    for (int i = n->count - 1; i >= n->skipped; i--) pthread_mutex_unlock(n->mutexes[i]);
  }
  pthread_mutex_unlock(&list->lock);
}

// In the child, on the thread that forked (which holds every mutex of the
// list's nodes). A node still pending was linked during the fork by a thread
// that does not exist here, which may have held its mutexes: they are
// reinitialised; it joins the list at the next link, unlink or fork.
static void list_child(int layer) {
  fork_list *list = &lists[layer];
  for (vr_fork_node *n = list->head; n; n = n->next)
    if (n->child) n->child(n);
  vr_fork_node *pending = take_pending(list), *newest = NULL;
  for (vr_fork_node *n = pending, *next; n; n = next) {
    next = n->next;
    for (int i = 0; i < n->count; i++) pthread_mutex_init(n->mutexes[i], NULL);
    if (n->child) n->child(n);
    n->next = newest;
    newest = n;
  }
  atomic_store(&list->pending, newest);
  list_release(layer);
}

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
    list_prepare(l);
    int n = atomic_load(&counts[l]);
    for (int i = 0; i < n; i++)
      if (entries[l][i].prepare) entries[l][i].prepare();
  }
}

static void parent_all(void) {
  for (int l = VR_FORK_LAYERS - 1; l >= 0; l--) {
    for (int i = atomic_load(&counts[l]) - 1; i >= 0; i--)
      if (entries[l][i].parent) entries[l][i].parent();
    list_release(l);
  }
  pthread_mutex_unlock(&registry_lock);
}

static void child_all(void) {
  atomic_fetch_add_explicit(&fork_count, 1, memory_order_relaxed);
  for (int l = VR_FORK_LAYERS - 1; l >= 0; l--) {
    for (int i = atomic_load(&counts[l]) - 1; i >= 0; i--)
      if (entries[l][i].child) entries[l][i].child();
    list_child(l);
  }
  pthread_mutex_init(&registry_lock, NULL);
}

__attribute__((constructor)) static void atfork_install(void) {
  pthread_atfork(prepare_all, parent_all, child_all);
}
