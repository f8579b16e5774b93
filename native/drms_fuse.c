// drms's own FUSE binding on libfuse3: serves reads and metadata lookups on libfuse's threads against the
// directory under the mount (*at() calls on its fd), journals writes, flushes and fsyncs of plain mirrored files
// there too, and namespace changes while JavaScript lets it (capture.c), and hands every other mutation to
// JavaScript, which journals it.
#define FUSE_USE_VERSION 35
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <node_api.h>

#include "capture.h"
#include "flush.h"
#include "pages.h"
#include "uring.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <isa-l/crc.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

// Operations answered in JavaScript, in the order of OP_NAMES.
enum op {
  OP_OPEN, OP_CREATE, OP_WRITE, OP_FLUSH, OP_FSYNC, OP_RELEASE, OP_TRUNCATE, OP_FTRUNCATE, OP_CHMOD, OP_CHOWN,
  OP_UTIMENS, OP_UNLINK, OP_RMDIR, OP_MKDIR, OP_RENAME, OP_SYMLINK, OP_LINK, OP_SETXATTR, OP_GETXATTR,
  OP_REMOVEXATTR, OP_FALLOCATE, OP_REPLICATED, OP_COUNT
};
static const char *const OP_NAMES[OP_COUNT] = {
  "open", "create", "write", "flush", "fsync", "release", "truncate", "ftruncate", "chmod", "chown",
  "utimens", "unlink", "rmdir", "mkdir", "rename", "symlink", "link", "setxattr", "getxattr",
  "removexattr", "fallocate", "replicated"
};

// Attributes drms answers itself (user.drms.txn): they go to JavaScript, every other read is native.
static const char RESERVED_XATTRS[] = "user.drms.";

struct session {
  struct fuse *fuse;
  pthread_t loop;
  int loop_running;
  int root_fd;
  int dev_fd;          // the connection to the kernel when drms mounted it itself, else -1
  int writeback;
  int io_uring;        // asked for: served over io_uring if the kernel offers it
  struct uring *uring; // started once the kernel took the INIT reply
  unsigned max_write;
  dev_t dev;
  char *mountpoint;
  napi_threadsafe_function tsfn;
  napi_ref ops[OP_COUNT];
  struct capture *capture;           // NULL: every mutation goes to JavaScript
  napi_threadsafe_function captured; // tells JavaScript there are captured entries to take
  struct nocap *nocap;               // paths known to have no security.capability
  uint64_t nocap_generation;
  pthread_mutex_t nocap_lock;
};

// The kernel asks for security.capability before a write (before every write unless the connection has
// FUSE_HANDLE_KILLPRIV_V2, see dev_read; then once per file). A path found without one is remembered for a
// second (a change beneath the mount shows within that), and forgotten at once by any operation that could give a
// path one: a new name (create, mkdir, symlink, link, rename) or an xattr set.
#define NOCAP_SLOTS 1024
#define NOCAP_PATH 256
static const char CAPABILITY[] = "security.capability";
struct nocap {
  uint64_t generation;
  time_t at;
  char path[NOCAP_PATH];
};

// One operation waiting on a libfuse thread for JavaScript's answer.
struct request {
  enum op op;
  const char *path, *path2, *name;
  const char *data; size_t size;   // write data, xattr value
  char *out; size_t out_size;      // getxattr's buffer
  off_t offset, length;
  mode_t mode; int flags; uid_t uid; gid_t gid;
  uint64_t fh; int datasync;
  uint64_t seq;                    // replicated: the entry the backup must have applied
  struct timespec tv[2];
  int result; uint64_t out_fh;
  int done;
  int detached;                    // nobody waits for the answer: finish() frees it (see op_release)
  pthread_mutex_t lock; pthread_cond_t cond;
};

// Set by dev_read for the request this thread serves next (libfuse's workers read a request and serve it):
// the kernel asks the server to clear set-user-ID and set-group-ID (kill_suidgid).
static __thread int request_kills_suidgid;

// Set by note_request likewise: the node the request is about, and the unique of a CREATE (its reply names the new
// node, see dev_writev); the request's unique and opcode, whose reply dev_writev may amend (cache_file_attrs).
static __thread uint64_t request_nodeid, create_unique, request_unique;
static __thread uint32_t request_opcode;

// Set by op_init on the thread that answers INIT, for dev_writev, which starts the session's ring.
static __thread struct session *init_session;

// The JavaScript reply function's link to its request; cut once answered (a second answer is ignored).
struct ticket { struct request *req; };

static struct session *current(void) { return fuse_get_context()->private_data; }

static void finish(struct request *r, int result) {
  if (r->detached) {
    free(r);
    return;
  }
  pthread_mutex_lock(&r->lock);
  r->result = result;
  r->done = 1;
  pthread_cond_signal(&r->cond);
  pthread_mutex_unlock(&r->lock);
}

static size_t nocap_slot(const char *path) {
  uint64_t h = 1469598103934665603ull;
  for (const unsigned char *c = (const unsigned char *)path; *c; c++) h = (h ^ *c) * 1099511628211ull;
  return (size_t)(h % NOCAP_SLOTS);
}

static time_t now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec;
}

static int nocap_known(struct session *s, const char *path) {
  struct nocap *n = &s->nocap[nocap_slot(path)];
  pthread_mutex_lock(&s->nocap_lock);
  int known = n->generation == s->nocap_generation && now_s() - n->at < 1 && strcmp(n->path, path) == 0;
  pthread_mutex_unlock(&s->nocap_lock);
  return known;
}

static void nocap_remember(struct session *s, const char *path) {
  if (strlen(path) >= NOCAP_PATH) return;
  struct nocap *n = &s->nocap[nocap_slot(path)];
  pthread_mutex_lock(&s->nocap_lock);
  n->generation = s->nocap_generation;
  n->at = now_s();
  strcpy(n->path, path);
  pthread_mutex_unlock(&s->nocap_lock);
}

static void nocap_forget(struct session *s) {
  pthread_mutex_lock(&s->nocap_lock);
  s->nocap_generation++;
  pthread_mutex_unlock(&s->nocap_lock);
}

// Hands `r` to JavaScript; dispatch_wait() then waits for its answer (the caller may work meanwhile).
static void dispatch_start(struct session *s, struct request *r) {
  r->done = 0;
  pthread_mutex_init(&r->lock, NULL);
  pthread_cond_init(&r->cond, NULL);
  if (napi_call_threadsafe_function(s->tsfn, r, napi_tsfn_blocking) != napi_ok) {
    r->result = -EIO;
    r->done = 1;
  }
}

static int dispatch_wait(struct request *r) {
  pthread_mutex_lock(&r->lock);
  while (!r->done) pthread_cond_wait(&r->cond, &r->lock);
  pthread_mutex_unlock(&r->lock);
  pthread_mutex_destroy(&r->lock);
  pthread_cond_destroy(&r->cond);
  return r->result;
}

static int dispatch(struct request *r) {
  struct session *s = current();
  // Before and after: libfuse's path locks already keep a lookup of these paths from running in between.
  int names = r->op == OP_CREATE || r->op == OP_MKDIR || r->op == OP_SYMLINK || r->op == OP_LINK || r->op == OP_RENAME || r->op == OP_SETXATTR;
  if (names) nocap_forget(s);
  dispatch_start(s, r);
  int rc = dispatch_wait(r);
  if (names) nocap_forget(s);
  return rc;
}

// Whether the requester is in group `gid` (its own group or a supplementary one).
static int requester_in_group(gid_t gid) {
  if (fuse_get_context()->gid == gid) return 1;
  gid_t groups[256];
  int n = fuse_getgroups(256, groups);
  for (int i = 0; i < n && i < 256; i++) if (groups[i] == gid) return 1;
  return 0;
}

// With FUSE_HANDLE_KILLPRIV_V2 the kernel leaves clearing set-user-ID and set-group-ID to the server when a user
// without CAP_FSETID writes, truncates or O_TRUNC-opens a file. drms runs as root, whose own writes keep the bits:
// it clears them itself, through JavaScript's chmod, so that the backup's copy changes too. The VFS's rule
// (setattr_should_drop_sgid): set-group-ID goes from a group-executable file, or when the requester is not in its group.
static int kill_suidgid(const char *path, int fd) {
  if (!request_kills_suidgid) return 0;
  request_kills_suidgid = 0;
  struct stat st;
  if ((fd >= 0 ? fstat(fd, &st) : fstatat(current()->root_fd, rel(path), &st, AT_SYMLINK_NOFOLLOW)) != 0) return -errno;
  mode_t mode = st.st_mode & 07777, kept = mode & ~S_ISUID;
  if ((kept & S_ISGID) && ((kept & S_IXGRP) || !requester_in_group(st.st_gid))) kept &= ~S_ISGID;
  if (kept == mode || !S_ISREG(st.st_mode)) return 0;
  if (path == NULL) return fchmod(fd, kept) == 0 ? 0 : -errno;
  struct request r = { .op = OP_CHMOD, .path = path, .mode = kept };
  return dispatch(&r);
}

// ---- JavaScript side of a request ----

static napi_value reply(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  struct ticket *t;
  napi_get_cb_info(env, info, &argc, argv, NULL, (void **)&t);
  struct request *r = t->req;
  if (r == NULL) return NULL;
  t->req = NULL;
  int32_t code = -EIO;
  if (argc >= 1) napi_get_value_int32(env, argv[0], &code);
  if (code >= 0 && argc >= 2) {
    napi_valuetype type;
    napi_typeof(env, argv[1], &type);
    if ((r->op == OP_OPEN || r->op == OP_CREATE) && type == napi_number) {
      int64_t fh;
      napi_get_value_int64(env, argv[1], &fh);
      r->out_fh = (uint64_t)fh;
    } else if (r->op == OP_GETXATTR) {
      bool isBuffer = false;
      napi_is_buffer(env, argv[1], &isBuffer);
      void *data = NULL;
      size_t len = 0;
      if (isBuffer) napi_get_buffer_info(env, argv[1], &data, &len);
      if (r->out_size == 0) code = (int32_t)len;
      else if (len > r->out_size) code = -ERANGE;
      else {
        memcpy(r->out, data, len);
        code = (int32_t)len;
      }
    }
  }
  finish(r, code);
  return NULL;
}

static void free_ticket(napi_env env, void *data, void *hint) { free(data); }

static napi_value str_or_null(napi_env env, const char *s) {
  napi_value v;
  if (s) napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  else napi_get_null(env, &v);
  return v;
}

static napi_value num(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

// A time as JavaScript takes it: [sec, nsec], or 'now' / 'omit'.
static napi_value time_arg(napi_env env, const struct timespec *ts) {
  napi_value v;
  if (ts->tv_nsec == UTIME_NOW) napi_create_string_utf8(env, "now", NAPI_AUTO_LENGTH, &v);
  else if (ts->tv_nsec == UTIME_OMIT) napi_create_string_utf8(env, "omit", NAPI_AUTO_LENGTH, &v);
  else {
    napi_create_array_with_length(env, 2, &v);
    napi_set_element(env, v, 0, num(env, (double)ts->tv_sec));
    napi_set_element(env, v, 1, num(env, (double)ts->tv_nsec));
  }
  return v;
}

static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  struct session *s = context;
  struct request *r = data;
  if (env == NULL) {
    finish(r, -EIO);
    return;
  }
  napi_value fn, argv[8];
  size_t argc = 0;
  napi_get_reference_value(env, s->ops[r->op], &fn);
  napi_valuetype type;
  napi_typeof(env, fn, &type);
  if (type != napi_function) {
    finish(r, -ENOSYS);
    return;
  }
  argv[argc++] = str_or_null(env, r->path);
  switch (r->op) {
    case OP_OPEN: argv[argc++] = num(env, r->flags); break;
    case OP_CREATE: argv[argc++] = num(env, r->mode); break;
    case OP_WRITE: {
      napi_value buf;
      // The data stays valid until the reply: this libfuse thread waits for it.
      napi_create_external_buffer(env, r->size, (void *)r->data, NULL, NULL, &buf);
      argv[argc++] = num(env, (double)r->fh);
      argv[argc++] = buf;
      argv[argc++] = num(env, (double)r->size);
      argv[argc++] = num(env, (double)r->offset);
      break;
    }
    case OP_FLUSH: case OP_RELEASE: argv[argc++] = num(env, (double)r->fh); break;
    case OP_FSYNC: argv[argc++] = num(env, r->datasync); argv[argc++] = num(env, (double)r->fh); break;
    case OP_REPLICATED: argv[argc++] = num(env, (double)r->seq); break;
    case OP_TRUNCATE: argv[argc++] = num(env, (double)r->offset); break;
    case OP_FTRUNCATE: argv[argc++] = num(env, (double)r->fh); argv[argc++] = num(env, (double)r->offset); break;
    case OP_CHMOD: case OP_MKDIR: argv[argc++] = num(env, r->mode); break;
    case OP_CHOWN: argv[argc++] = num(env, r->uid); argv[argc++] = num(env, r->gid); break;
    case OP_UTIMENS: argv[argc++] = time_arg(env, &r->tv[0]); argv[argc++] = time_arg(env, &r->tv[1]); break;
    case OP_UNLINK: case OP_RMDIR: break;
    case OP_RENAME: case OP_LINK: argv[argc++] = str_or_null(env, r->path2); break;
    // fuse-native's order: symlink(target, linkPath).
    case OP_SYMLINK: argv[argc - 1] = str_or_null(env, r->path2); argv[argc++] = str_or_null(env, r->path); break;
    case OP_SETXATTR: {
      napi_value buf;
      napi_create_buffer_copy(env, r->size, r->data, NULL, &buf);
      argv[argc++] = str_or_null(env, r->name);
      argv[argc++] = buf;
      argv[argc++] = num(env, 0);
      argv[argc++] = num(env, r->flags);
      break;
    }
    case OP_GETXATTR: argv[argc++] = str_or_null(env, r->name); argv[argc++] = num(env, 0); break;
    case OP_REMOVEXATTR: argv[argc++] = str_or_null(env, r->name); break;
    case OP_FALLOCATE:
      argv[argc++] = num(env, (double)r->fh);
      argv[argc++] = num(env, r->mode);
      argv[argc++] = num(env, (double)r->offset);
      argv[argc++] = num(env, (double)r->length);
      break;
    default: break;
  }
  struct ticket *t = malloc(sizeof *t);
  t->req = r;
  napi_value cb, global;
  napi_create_function(env, "reply", NAPI_AUTO_LENGTH, reply, t, &cb);
  napi_add_finalizer(env, cb, t, free_ticket, NULL, NULL);
  argv[argc++] = cb;
  napi_get_global(env, &global);
  if (napi_call_function(env, global, fn, argc, argv, NULL) != napi_ok) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    if (t->req) {
      t->req = NULL;
      finish(r, -EIO);
    }
  }
}

// ---- Operations served natively ----

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
  struct session *s = current();
  cfg->use_ino = 1;
  // Unlink really unlinks (no .fuse_hidden renames to journal); an unlinked open file gets a NULL path.
  cfg->hard_remove = 1;
  // A cached attribute of one hard-link name would outlive a chmod through another (and, with the writeback
  // cache, be written back over it: measured), so attributes are not cached, but for files of one name in
  // writeback mode (cache_file_attrs).
  cfg->attr_timeout = 0;
  cfg->negative_timeout = 0;
  if (s->writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE)) conn->want |= FUSE_CAP_WRITEBACK_CACHE;
  else conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  conn->max_write = s->max_write;
  // Every change passes through the mount, so cached pages stay valid; libfuse3's default would ask for the
  // attributes before each cached read (with no attribute caching: a request per read).
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  init_session = s;
  return s;
}

// ---- Open nodes ----
// fstat asks GETATTR of the inode, without the handle it came through, and libfuse's path-based API has no path for
// a node whose last name is gone (hard_remove): it would answer ESTALE where ext4 answers. drms remembers the handles
// open on each node (by connection and node id, from OPEN and CREATE to RELEASE); such a GETATTR reaches op_getattr
// with NODE_HANDLE (note_request), which fstats one of them.
#define OPEN_NODE_BUCKETS 4096
#define NODE_HANDLE UINT64_MAX // the handle given to libfuse: op_getattr looks up the node's own

struct open_node { int conn; uint64_t nodeid, fh; struct open_node *next; };
static struct open_node *open_nodes[OPEN_NODE_BUCKETS];
static pthread_mutex_t open_nodes_lock = PTHREAD_MUTEX_INITIALIZER; // held while a looked-up handle is used

static struct open_node **open_node_bucket(int conn, uint64_t nodeid) {
  return &open_nodes[(nodeid * 31 + (uint64_t)conn) % OPEN_NODE_BUCKETS];
}

// The first handle open on the node, or NODE_HANDLE (lock held).
static uint64_t open_node_handle(int conn, uint64_t nodeid) {
  for (struct open_node *n = *open_node_bucket(conn, nodeid); n; n = n->next)
    if (n->conn == conn && n->nodeid == nodeid) return n->fh;
  return NODE_HANDLE;
}

static void open_node_add(int conn, uint64_t nodeid, uint64_t fh) {
  struct open_node *n = malloc(sizeof *n);
  if (!n) return; // only an fstat after the file's last unlink answers ESTALE
  *n = (struct open_node){ conn, nodeid, fh, NULL };
  pthread_mutex_lock(&open_nodes_lock);
  struct open_node **b = open_node_bucket(conn, nodeid);
  n->next = *b;
  *b = n;
  pthread_mutex_unlock(&open_nodes_lock);
}

// Before JavaScript closes the handle: once this returns, no GETATTR uses it.
static void open_node_remove(int conn, uint64_t nodeid, uint64_t fh) {
  pthread_mutex_lock(&open_nodes_lock);
  for (struct open_node **p = open_node_bucket(conn, nodeid); *p; p = &(*p)->next) {
    struct open_node *n = *p;
    if (n->conn == conn && n->nodeid == nodeid && n->fh == fh) {
      *p = n->next;
      free(n);
      break;
    }
  }
  pthread_mutex_unlock(&open_nodes_lock);
}

// A connection's handles, once it ended: a later connection may get its descriptor number.
static void open_nodes_forget(int conn) {
  pthread_mutex_lock(&open_nodes_lock);
  for (size_t i = 0; i < OPEN_NODE_BUCKETS; i++) {
    for (struct open_node **p = &open_nodes[i]; *p;) {
      struct open_node *n = *p;
      if (n->conn != conn) {
        p = &n->next;
        continue;
      }
      *p = n->next;
      free(n);
    }
  }
  pthread_mutex_unlock(&open_nodes_lock);
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
  // NODE_HANDLE (see note_request): a handle open on the node if there is one, else the path if it has one left.
  int by_node = fi && fi->fh == NODE_HANDLE;
  if (by_node) pthread_mutex_lock(&open_nodes_lock);
  uint64_t fh = by_node ? open_node_handle(current()->dev_fd, request_nodeid) : fi ? fi->fh : NODE_HANDLE;
  int rc = fh != NODE_HANDLE ? fstat((int)fh, st)
         : path ? fstatat(current()->root_fd, rel(path), st, AT_SYMLINK_NOFOLLOW)
         : (errno = ESTALE, -1);
  int e = errno;
  if (by_node) pthread_mutex_unlock(&open_nodes_lock);
  return rc == 0 ? 0 : -e;
}

static int op_readlink(const char *path, char *buf, size_t size) {
  ssize_t n = readlinkat(current()->root_fd, rel(path), buf, size - 1);
  if (n < 0) return -errno;
  buf[n] = 0;
  return 0;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags) {
  int fd = openat(current()->root_fd, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  DIR *d = fdopendir(fd);
  if (!d) {
    int e = errno;
    close(fd);
    return -e;
  }
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (filler(buf, de->d_name, NULL, 0, 0)) break;
  }
  closedir(d);
  return 0;
}

static int op_statfs(const char *path, struct statvfs *st) {
  return fstatvfs(current()->root_fd, st) == 0 ? 0 : -errno;
}

static int op_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  ssize_t n = pread((int)fi->fh, buf, size, off);
  return n < 0 ? -errno : (int)n;
}

// Paths for the calls that have no *at() form.
static void proc_path(char *out, size_t size, const char *path) {
  snprintf(out, size, "/proc/self/fd/%d/%s", current()->root_fd, rel(path));
}

static int op_getxattr(const char *path, const char *name, char *value, size_t size) {
  if (strncmp(name, RESERVED_XATTRS, sizeof RESERVED_XATTRS - 1) == 0) {
    struct request r = { .op = OP_GETXATTR, .path = path, .name = name, .out = value, .out_size = size };
    return dispatch(&r);
  }
  int capability = strcmp(name, CAPABILITY) == 0;
  if (capability && nocap_known(current(), path)) return -ENODATA;
  char p[PATH_MAX + 32];
  proc_path(p, sizeof p, path);
  ssize_t n = lgetxattr(p, name, value, size);
  if (n < 0 && errno == ENODATA && capability) nocap_remember(current(), path);
  return n < 0 ? -errno : (int)n;
}

static int op_listxattr(const char *path, char *list, size_t size) {
  char p[PATH_MAX + 32];
  proc_path(p, sizeof p, path);
  ssize_t n = llistxattr(p, list, size);
  return n < 0 ? -errno : (int)n;
}

// ---- Operations answered in JavaScript (an unlinked open file, path NULL, is not mirrored: served here) ----

// With the writeback cache, a file opened for JavaScript to serve its writes (a record file, a transaction's, O_SYNC,
// a read-only mount, the backlog cap) bypasses the cache: each write reaches drms whole and in order, as made.
// Without it, the kernel would drop a file's cached pages at every open; a file whose writes are captured or passed
// through changes only through the mount, so its pages stay valid across opens (a rollback restores before-images
// beneath the mount, and drops them: js_drop_cache).
static void opened(struct fuse_file_info *fi, uint64_t fh) {
  fi->fh = fh;
  struct session *s = current();
  int served_in_js = capture_mode(s->capture, fh) == H_JS;
  if (s->writeback) fi->direct_io = served_in_js;
  else fi->keep_cache = !served_in_js;
}

static int op_open(const char *path, struct fuse_file_info *fi) {
  int rc = kill_suidgid(path, -1);
  if (rc != 0) return rc;
  int flags = fi->flags;
  // With the writeback cache the kernel may read back pages of a file opened write-only.
  if (current()->writeback && (flags & O_ACCMODE) == O_WRONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
  struct request r = { .op = OP_OPEN, .path = path, .flags = flags };
  rc = dispatch(&r);
  if (rc == 0) {
    opened(fi, r.out_fh);
    open_node_add(current()->dev_fd, request_nodeid, fi->fh);
  }
  return rc;
}

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi) {
  struct session *s = current();
  if (s->capture) {
    // Served natively while JavaScript lets it (capture_create); a new name, so forgotten before and after (dispatch).
    nocap_forget(s);
    int fd = capture_create(s->capture, path, mode);
    if (fd != -EAGAIN) {
      nocap_forget(s);
      if (fd < 0) return fd;
      opened(fi, (uint64_t)fd);
      return 0;
    }
  }
  struct request r = { .op = OP_CREATE, .path = path, .mode = mode };
  int rc = dispatch(&r);
  if (rc == 0) opened(fi, r.out_fh);
  return rc;
}

static int op_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  int killed = kill_suidgid(path, (int)fi->fh);
  if (killed != 0) return killed;
  int mode = capture_mode(current()->capture, fi->fh);
  if (path == NULL || mode == H_PLAIN) {
    ssize_t n = pwrite((int)fi->fh, buf, size, off);
    return n < 0 ? -errno : (int)n;
  }
  if (captured(mode)) {
    int rc = capture_write(current()->capture, path, (int)fi->fh, buf, size, off);
    if (rc != -EAGAIN) return rc;
  }
  struct request r = { .op = OP_WRITE, .path = path, .data = buf, .size = size, .offset = off, .fh = fi->fh };
  return dispatch(&r);
}

// Sync mode: JavaScript answers a 'replicated' request for an entry once the backup has applied it. Started as soon
// as the entry is in the capture log, so that it ships while the log is flushed here.
static void replicate(void *arg, uint64_t seq) {
  struct request *r = arg;
  r->seq = seq;
  dispatch_start(current(), r);
}

// The answer of a captured flush or fsync: its own failure first, else the 'replicated' wait it started, if any.
static int replicated(int rc, struct request *r) {
  int wait = r->seq ? dispatch_wait(r) : 0;
  return rc != 0 ? rc : wait;
}

static int op_flush(const char *path, struct fuse_file_info *fi) {
  int mode = capture_mode(current()->capture, fi->fh);
  if (path == NULL || mode == H_PLAIN) return 0;
  if (captured(mode)) {
    struct request r = { .op = OP_REPLICATED, .path = path };
    return replicated(capture_flush(current()->capture, path, (int)fi->fh, mode == H_SYNC ? replicate : NULL, &r), &r);
  }
  struct request r = { .op = OP_FLUSH, .path = path, .fh = fi->fh };
  return dispatch(&r);
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
  int mode = capture_mode(current()->capture, fi->fh);
  if (captured(mode) && path) {
    struct request r = { .op = OP_REPLICATED, .path = path };
    return replicated(capture_fsync(current()->capture, path, (int)fi->fh, datasync, mode == H_SYNC ? replicate : NULL, &r), &r);
  }
  if (path == NULL || mode == H_PLAIN) return (datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh)) == 0 ? 0 : -errno;
  struct request r = { .op = OP_FSYNC, .path = path, .datasync = datasync, .fh = fi->fh };
  return dispatch(&r);
}

static int op_release(const char *path, struct fuse_file_info *fi) {
  struct capture *c = current()->capture;
  // Before the descriptor is closed: its number may be reused at once.
  if (c) capture_release_handle(c, fi->fh);
  open_node_remove(current()->dev_fd, request_nodeid, fi->fh);
  // A file created natively whose writes never came back to JavaScript: JavaScript knows nothing of the handle.
  // (It takes one over only while serving a request on it, before answering, so never while this runs.)
  if (c && !capture_js_owns(c, fi->fh)) return close((int)fi->fh) == 0 ? 0 : -errno;
  // Nothing waits for a release (the kernel sends it once close(2) has returned), so this thread does not wait for
  // JavaScript either: it forgets the handle and closes the descriptor in its turn. JavaScript's own opens run on
  // its thread, after this in its queue, so the number cannot be reused before it is closed.
  struct request *r = calloc(1, sizeof *r);
  if (r != NULL) {
    r->op = OP_RELEASE;
    r->fh = fi->fh;
    r->detached = 1;
    if (napi_call_threadsafe_function(current()->tsfn, r, napi_tsfn_blocking) == napi_ok) return 0;
    free(r);
  }
  // JavaScript cannot be told (no memory, the session closing): its entry stays until the number is opened again.
  return close((int)fi->fh) == 0 ? 0 : -errno;
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
  int rc = kill_suidgid(path, fi ? (int)fi->fh : -1);
  if (rc != 0) return rc;
  if (path == NULL) return ftruncate((int)fi->fh, size) == 0 ? 0 : -errno;
  struct request r = { .op = fi ? OP_FTRUNCATE : OP_TRUNCATE, .path = path, .offset = size, .fh = fi ? fi->fh : 0 };
  return dispatch(&r);
}

static int op_chmod(const char *path, mode_t mode, struct fuse_file_info *fi) {
  if (path == NULL) return fchmod((int)fi->fh, mode) == 0 ? 0 : -errno;
  struct request r = { .op = OP_CHMOD, .path = path, .mode = mode };
  return dispatch(&r);
}

static int op_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi) {
  if (path == NULL) return fchown((int)fi->fh, uid, gid) == 0 ? 0 : -errno;
  struct request r = { .op = OP_CHOWN, .path = path, .uid = uid, .gid = gid };
  return dispatch(&r);
}

static int op_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi) {
  if (path == NULL) return futimens((int)fi->fh, tv) == 0 ? 0 : -errno;
  if (fi && captured(capture_mode(current()->capture, fi->fh))) {
    int rc = capture_times(current()->capture, path, (int)fi->fh, tv);
    if (rc != -EAGAIN) return rc;
  }
  struct request r = { .op = OP_UTIMENS, .path = path };
  r.tv[0] = tv[0];
  r.tv[1] = tv[1];
  return dispatch(&r);
}

// A namespace change: journaled and served here while JavaScript lets it (capture_names), else there.
static int change_names(enum names_op op, struct request *r) {
  struct session *s = current();
  if (!s->capture) return dispatch(r);
  int names_new = op != NAMES_UNLINK && op != NAMES_RMDIR; // forgotten before and after, as dispatch does
  if (names_new) nocap_forget(s);
  int rc = capture_names(s->capture, op, r->path, r->path2, r->mode);
  if (rc == -EAGAIN) return dispatch(r);
  if (names_new) nocap_forget(s);
  return rc;
}

static int op_unlink(const char *path) {
  struct request r = { .op = OP_UNLINK, .path = path };
  return change_names(NAMES_UNLINK, &r);
}

static int op_rmdir(const char *path) {
  struct request r = { .op = OP_RMDIR, .path = path };
  return change_names(NAMES_RMDIR, &r);
}

static int op_mkdir(const char *path, mode_t mode) {
  struct request r = { .op = OP_MKDIR, .path = path, .mode = mode };
  return change_names(NAMES_MKDIR, &r);
}

static int op_rename(const char *from, const char *to, unsigned int flags) {
  // RENAME_NOREPLACE / RENAME_EXCHANGE are not journaled forms: callers (mv) fall back to a plain rename.
  if (flags) return -EINVAL;
  struct request r = { .op = OP_RENAME, .path = from, .path2 = to };
  return change_names(NAMES_RENAME, &r);
}

static int op_symlink(const char *target, const char *path) {
  struct request r = { .op = OP_SYMLINK, .path = path, .path2 = target };
  return change_names(NAMES_SYMLINK, &r);
}

static int op_link(const char *from, const char *to) {
  struct request r = { .op = OP_LINK, .path = from, .path2 = to };
  return change_names(NAMES_LINK, &r);
}

static int op_setxattr(const char *path, const char *name, const char *value, size_t size, int flags) {
  struct request r = { .op = OP_SETXATTR, .path = path, .name = name, .data = value, .size = size, .flags = flags };
  return dispatch(&r);
}

static int op_removexattr(const char *path, const char *name) {
  struct request r = { .op = OP_REMOVEXATTR, .path = path, .name = name };
  return dispatch(&r);
}

static int op_fallocate(const char *path, int mode, off_t off, off_t len, struct fuse_file_info *fi) {
  if (path == NULL) return fallocate((int)fi->fh, mode, off, len) == 0 ? 0 : -errno;
  struct request r = { .op = OP_FALLOCATE, .path = path, .fh = fi->fh, .mode = (mode_t)mode, .offset = off, .length = len };
  return dispatch(&r);
}

static const struct fuse_operations OPERATIONS = {
  .init = op_init,
  .getattr = op_getattr,
  .readlink = op_readlink,
  .readdir = op_readdir,
  .statfs = op_statfs,
  .read = op_read,
  .getxattr = op_getxattr,
  .listxattr = op_listxattr,
  .open = op_open,
  .create = op_create,
  .write = op_write,
  .flush = op_flush,
  .fsync = op_fsync,
  .release = op_release,
  .truncate = op_truncate,
  .chmod = op_chmod,
  .chown = op_chown,
  .utimens = op_utimens,
  .unlink = op_unlink,
  .rmdir = op_rmdir,
  .mkdir = op_mkdir,
  .rename = op_rename,
  .symlink = op_symlink,
  .link = op_link,
  .setxattr = op_setxattr,
  .removexattr = op_removexattr,
  .fallocate = op_fallocate,
};

// ---- The kernel connection ----
// As root drms opens /dev/fuse and mounts it itself (libfuse does the same for root) and reads and answers the
// kernel through dev_read/dev_writev, to accept FUSE_HANDLE_KILLPRIV_V2, which libfuse 3.14 cannot ask for. With it
// the kernel stops asking for security.capability before every write (one FUSE round trip of three per record
// appended with fdatasync) and flags the requests that must clear set-user-ID and set-group-ID instead.

// The INIT request this thread answers next, and whether the kernel offered KILLPRIV_V2 in it.
static __thread uint64_t init_unique;
static __thread int init_offers_killpriv, init_offers_uring;

// Notes what the request this thread serves next asks of the server beyond its operation.
static void note_request(void *buf, size_t n) {
  request_kills_suidgid = 0;
  if (n < sizeof(struct fuse_in_header)) return;
  const struct fuse_in_header *h = buf;
  void *arg = (char *)buf + sizeof *h;
  size_t size = n - sizeof *h;
  request_nodeid = h->nodeid;
  request_unique = h->unique;
  request_opcode = h->opcode;
  switch (h->opcode) {
    case FUSE_GETATTR: {
      // Without a handle (fstat, stat): op_getattr looks for one open on the node, in case no name is left (see
      // Open nodes).
      struct fuse_getattr_in *in = arg;
      if (size < sizeof *in || (in->getattr_flags & FUSE_GETATTR_FH)) break;
      in->getattr_flags |= FUSE_GETATTR_FH;
      in->fh = NODE_HANDLE;
      break;
    }
    case FUSE_CREATE:
      create_unique = h->unique;
      break;
    case FUSE_INIT:
      if (size >= offsetof(struct fuse_init_in, flags) + sizeof(uint32_t)) {
        const struct fuse_init_in *in = arg;
        init_unique = h->unique;
        init_offers_killpriv = (in->flags & FUSE_HANDLE_KILLPRIV_V2) != 0;
        init_offers_uring = size >= offsetof(struct fuse_init_in, flags2) + sizeof(uint32_t) && (in->flags & FUSE_INIT_EXT) &&
                            (in->flags2 & URING_INIT_FLAG2);
      }
      break;
    case FUSE_WRITE:
      if (size >= offsetof(struct fuse_write_in, lock_owner))
        request_kills_suidgid = (((const struct fuse_write_in *)arg)->write_flags & FUSE_WRITE_KILL_SUIDGID) != 0;
      break;
    case FUSE_SETATTR: {
      // A chown asks too, but the chown itself clears the bits, here and on the backup.
      const struct fuse_setattr_in *in = arg;
      request_kills_suidgid = size >= sizeof *in && (in->valid & FATTR_KILL_SUIDGID) && (in->valid & FATTR_SIZE);
      break;
    }
    case FUSE_OPEN:
      if (size >= sizeof(struct fuse_open_in)) request_kills_suidgid = (((const struct fuse_open_in *)arg)->open_flags & FUSE_OPEN_KILL_SUIDGID) != 0;
      break;
    default: break;
  }
}

static ssize_t dev_read(int fd, void *buf, size_t len, void *userdata) {
  ssize_t n = read(fd, buf, len);
  note_request(buf, n > 0 ? (size_t)n : 0);
  return n;
}

static void serve_ring_request(void *ctx, void *request, size_t size) {
  struct session *s = ctx;
  note_request(request, size);
  struct fuse_buf buf = { .size = size, .mem = (void *)request };
  fuse_session_process_buf(fuse_get_session(s->fuse), &buf);
}

// Ring entries per CPU: each blocks while it serves, and fsyncs of many writers on one CPU must meet in one flush.
static int ring_entries_per_cpu(void) {
  int cpus = uring_cpus();
  return cpus >= 8 ? 2 : 16 / (cpus > 0 ? cpus : 1);
}

// The payload buffer a ring entry needs: the kernel's max(FUSE_MIN_READ_BUFFER, max_write, max_pages pages).
static size_t ring_payload_size(const struct fuse_init_out *out) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE), size = 8192;
  if (out->max_write > size) size = out->max_write;
  if ((out->flags & FUSE_MAX_PAGES) && out->max_pages * page > size) size = out->max_pages * page;
  return size;
}

// A CREATE's reply: the new node and its handle (fuse_entry_out, then fuse_open_out), for the open nodes.
static void note_created(int conn, const struct iovec *iov, int count) {
  struct { struct fuse_out_header h; struct fuse_entry_out entry; struct fuse_open_out open; } r;
  size_t n = 0;
  for (int i = 0; i < count && n < sizeof r; i++) {
    size_t take = iov[i].iov_len < sizeof r - n ? iov[i].iov_len : sizeof r - n;
    memcpy((char *)&r + n, iov[i].iov_base, take);
    n += take;
  }
  if (n == sizeof r && r.h.unique == create_unique && r.h.error == 0) open_node_add(conn, r.entry.nodeid, r.open.fh);
  create_unique = 0;
}

// In writeback mode the kernel wants a file's size and mode before every buffered write, a GETATTR each unless
// they are cached. They are, for FILE_ATTR_SECONDS, in the replies that carry a regular file's attributes when it
// has one name and no set-user-ID or set-group-ID bit: every change to it then comes through its one node, whose
// setattr replies renew the cache (a second name is another node: after a link the first may say one link for up
// to a second); a set-ID bit is cleared by drms itself (kill_suidgid), beside the kernel.
#define FILE_ATTR_SECONDS 1
static void cache_file_attrs(struct iovec *iov, int count) {
  if (count < 2 || iov[0].iov_len < sizeof(struct fuse_out_header)) return;
  const struct fuse_out_header *h = iov[0].iov_base;
  if (h->unique != request_unique || h->error != 0) return;
  struct fuse_attr *attr;
  uint64_t *valid;
  uint32_t *valid_nsec;
  switch (request_opcode) {
    case FUSE_GETATTR:
    case FUSE_SETATTR: {
      if (iov[1].iov_len < sizeof(struct fuse_attr_out)) return;
      struct fuse_attr_out *out = iov[1].iov_base;
      attr = &out->attr, valid = &out->attr_valid, valid_nsec = &out->attr_valid_nsec;
      break;
    }
    case FUSE_LOOKUP:
    case FUSE_CREATE: {
      if (iov[1].iov_len < sizeof(struct fuse_entry_out)) return;
      struct fuse_entry_out *out = iov[1].iov_base;
      attr = &out->attr, valid = &out->attr_valid, valid_nsec = &out->attr_valid_nsec;
      break;
    }
    default: return;
  }
  struct fuse_context *ctx = fuse_get_context();
  const struct session *s = ctx ? ctx->private_data : NULL;
  if (!s || !s->writeback || !S_ISREG(attr->mode) || attr->nlink != 1 || (attr->mode & (S_ISUID | S_ISGID))) return;
  *valid = FILE_ATTR_SECONDS;
  *valid_nsec = 0;
}

static ssize_t dev_writev(int fd, struct iovec *iov, int count, void *userdata) {
  if (create_unique) note_created(fd, iov, count);
  cache_file_attrs(iov, count);
  ssize_t ring = uring_reply(iov, count);
  if (ring >= 0) return ring;
  struct session *starts_ring = NULL;
  struct fuse_init_out *init = NULL;
  if (init_unique && count > 1 && iov[0].iov_len >= sizeof(struct fuse_out_header)) {
    const struct fuse_out_header *h = iov[0].iov_base;
    if (h->unique == init_unique) {
      if (h->error == 0 && iov[1].iov_len >= offsetof(struct fuse_init_out, flags2) + sizeof(uint32_t)) {
        init = iov[1].iov_base;
        if (init_offers_killpriv) init->flags |= FUSE_HANDLE_KILLPRIV_V2;
        if (init_offers_uring && init_session && init_session->io_uring) {
          init->flags |= FUSE_INIT_EXT;
          init->flags2 |= URING_INIT_FLAG2;
          starts_ring = init_session;
        }
      }
      init_unique = 0;
      init_session = NULL;
    }
  }
  ssize_t n = writev(fd, iov, count);
  // The kernel has taken the INIT reply: entries can register.
  if (n >= 0 && starts_ring) {
    struct uring *u = uring_start(fd, ring_payload_size(init), ring_entries_per_cpu(), serve_ring_request, starts_ring);
    __atomic_store_n(&starts_ring->uring, u, __ATOMIC_RELEASE);
  }
  return n;
}

static const struct fuse_custom_io DEVICE_IO = { .read = dev_read, .writev = dev_writev };

// Opens /dev/fuse and mounts it at `mountpoint` with the options libfuse would use; -1 (errno set) if this process
// may not mount (not root), and libfuse mounts instead.
static int mount_device(const char *mountpoint, const char *fsname, mode_t rootmode) {
  int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) return -1;
  char opts[128], type[64];
  snprintf(opts, sizeof opts, "fd=%d,rootmode=%o,user_id=%u,group_id=%u,default_permissions,allow_other", fd, rootmode & S_IFMT, getuid(), getgid());
  snprintf(type, sizeof type, "fuse.%s", fsname);
  if (mount(fsname, mountpoint, type, MS_NOSUID | MS_NODEV, opts) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

// ---- Mount and unmount ----

static void *loop_main(void *arg) {
  struct session *s = arg;
  pthread_setname_np(pthread_self(), "drms-fuse"); // libfuse's worker threads inherit it
  struct fuse_loop_config cfg = { .clone_fd = 0, .max_idle_threads = 16 };
  fuse_loop_mt(s->fuse, &cfg);
  return NULL;
}

// The device of the mount at `dir`, from /proc/self/mountinfo (the last mount there is ours).
static dev_t mount_dev(const char *dir) {
  FILE *f = fopen("/proc/self/mountinfo", "r");
  if (!f) return 0;
  char line[4096], point[4096];
  unsigned maj, min;
  dev_t dev = 0;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &maj, &min, point) == 3 && strcmp(point, dir) == 0) dev = makedev(maj, min);
  }
  fclose(f);
  return dev;
}

#define THROW(env, msg) do { napi_throw_error(env, NULL, msg); return NULL; } while (0)

static char *get_string(napi_env env, napi_value v) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  return s;
}

static void release_session(napi_env env, struct session *s) {
  open_nodes_forget(s->dev_fd);
  for (int i = 0; i < OP_COUNT; i++) if (s->ops[i]) napi_delete_reference(env, s->ops[i]);
  if (s->capture) capture_free(s->capture);
  if (s->uring) uring_free(s->uring);
  if (s->captured) napi_release_threadsafe_function(s->captured, napi_tsfn_release);
  if (s->tsfn) napi_release_threadsafe_function(s->tsfn, napi_tsfn_release);
  free(s->nocap);
  pthread_mutex_destroy(&s->nocap_lock);
  free(s->mountpoint);
  free(s);
}

static void notify_captured(void *arg) {
  napi_call_threadsafe_function(((struct session *)arg)->captured, NULL, napi_tsfn_nonblocking);
}

// options.capture = { logFds: [a, b], active, generation, key, flushFd, nextSeq, onCaptured }: writes of handles
// set to capture mode are journaled here. Absent: none are.
static int start_capture(napi_env env, struct session *s, napi_value options) {
  bool has = false;
  napi_has_named_property(env, options, "capture", &has);
  if (!has) return 0;
  napi_value cap, v, fds, fn, name;
  napi_get_named_property(env, options, "capture", &cap);
  napi_valuetype type;
  napi_typeof(env, cap, &type);
  if (type == napi_undefined) return 0;
  int fd[2];
  int32_t active, flush_fd;
  int64_t generation, next_seq;
  uint64_t key;
  bool lossless;
  napi_get_named_property(env, cap, "logFds", &fds);
  for (uint32_t i = 0; i < 2; i++) {
    if (napi_get_element(env, fds, i, &v) != napi_ok || napi_get_value_int32(env, v, &fd[i]) != napi_ok) return -1;
  }
  napi_get_named_property(env, cap, "active", &v);
  if (napi_get_value_int32(env, v, &active) != napi_ok) return -1;
  napi_get_named_property(env, cap, "generation", &v);
  if (napi_get_value_int64(env, v, &generation) != napi_ok) return -1;
  napi_get_named_property(env, cap, "key", &v);
  if (napi_get_value_bigint_uint64(env, v, &key, &lossless) != napi_ok) return -1;
  napi_get_named_property(env, cap, "flushFd", &v);
  if (napi_get_value_int32(env, v, &flush_fd) != napi_ok) return -1;
  napi_get_named_property(env, cap, "nextSeq", &v);
  if (napi_get_value_int64(env, v, &next_seq) != napi_ok) return -1;
  napi_get_named_property(env, cap, "onCaptured", &fn);
  napi_create_string_utf8(env, "drms-captured", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, fn, NULL, name, 0, 1, NULL, NULL, NULL, NULL, &s->captured) != napi_ok) return -1;
  napi_unref_threadsafe_function(env, s->captured);
  s->capture = capture_new(s->root_fd, fd, active, (uint64_t)generation, key, flush_fd, (uint64_t)next_seq, notify_captured, s);
  return s->capture ? 0 : -1;
}

// mount(mountpoint, rootFd, ops, { writeback, maxWrite, fsname, capture? }) -> session (external)
static napi_value js_mount(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4) THROW(env, "mount(mountpoint, rootFd, ops, options)");
  // Entries of 1 MiB writes are allocated and freed on many libfuse threads: with glibc's sliding mmap threshold
  // they would settle in per-thread arenas and stay there (hundreds of MiB measured); fixed, they go back at once.
  // Only where a mount is served: the backup allocates on one thread, and its frames of a few MiB, from the heap
  // glibc's sliding threshold keeps, land in memory it touched before instead of in new mappings.
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  struct session *s = calloc(1, sizeof *s);
  s->dev_fd = -1;
  s->nocap = calloc(NOCAP_SLOTS, sizeof *s->nocap);
  s->nocap_generation = 1;
  pthread_mutex_init(&s->nocap_lock, NULL);
  s->mountpoint = get_string(env, argv[0]);
  int32_t fd;
  napi_get_value_int32(env, argv[1], &fd);
  s->root_fd = fd;
  for (int i = 0; i < OP_COUNT; i++) {
    napi_value fn;
    bool has = false;
    napi_has_named_property(env, argv[2], OP_NAMES[i], &has);
    if (!has) continue;
    napi_get_named_property(env, argv[2], OP_NAMES[i], &fn);
    napi_create_reference(env, fn, 1, &s->ops[i]);
  }
  napi_value v;
  bool b = false;
  napi_get_named_property(env, argv[3], "writeback", &v);
  napi_get_value_bool(env, v, &b);
  s->writeback = b;
  b = false;
  napi_get_named_property(env, argv[3], "ioUring", &v);
  napi_get_value_bool(env, v, &b);
  s->io_uring = b;
  uint32_t mw = 131072;
  napi_get_named_property(env, argv[3], "maxWrite", &v);
  napi_get_value_uint32(env, v, &mw);
  s->max_write = mw;
  napi_get_named_property(env, argv[3], "fsname", &v);
  char *fsname = get_string(env, v);
  struct stat st;
  if (!s->mountpoint || !fsname || !s->nocap || stat(s->mountpoint, &st) != 0) {
    free(fsname);
    release_session(env, s);
    THROW(env, "mount: bad mountpoint or fsname");
  }

  if (start_capture(env, s, argv[3]) != 0) {
    free(fsname);
    release_session(env, s);
    THROW(env, "mount: bad capture options (logFds, active, generation, key, flushFd, nextSeq, onCaptured)");
  }
  napi_value name;
  napi_create_string_utf8(env, "drms-fuse", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, s, call_js, &s->tsfn) != napi_ok) {
    free(fsname);
    release_session(env, s);
    THROW(env, "mount: cannot create the dispatch queue");
  }

  // The options are libfuse's to mount with when this process may not mount itself.
  char opts[512];
  snprintf(opts, sizeof opts, "allow_other,default_permissions,fsname=%s,subtype=%s", fsname, fsname);
  char *args_v[] = { "drms", "-o", opts, NULL };
  struct fuse_args args = FUSE_ARGS_INIT(3, args_v);
  s->fuse = fuse_new(&args, &OPERATIONS, sizeof OPERATIONS, s);
  if (!s->fuse) {
    free(fsname);
    release_session(env, s);
    THROW(env, "mount: fuse_new failed (see stderr)");
  }
  int devfd = mount_device(s->mountpoint, fsname, st.st_mode);
  free(fsname);
  if (devfd >= 0 && fuse_session_custom_io(fuse_get_session(s->fuse), &DEVICE_IO, devfd) != 0) {
    umount2(s->mountpoint, MNT_DETACH);
    close(devfd);
    devfd = -1;
    errno = EINVAL;
  }
  s->dev_fd = devfd;
  if (devfd < 0 && (errno != EPERM || fuse_mount(s->fuse, s->mountpoint) != 0)) {
    int e = errno;
    fuse_destroy(s->fuse);
    release_session(env, s);
    char msg[160];
    snprintf(msg, sizeof msg, "mount: cannot mount /dev/fuse: %s", strerror(e));
    THROW(env, msg);
  }
  // Never stat the mount from here: its requests are not served until the loop runs.
  s->dev = mount_dev(s->mountpoint);
  if (pthread_create(&s->loop, NULL, loop_main, s) != 0) {
    umount2(s->mountpoint, MNT_DETACH);
    fuse_unmount(s->fuse);
    fuse_destroy(s->fuse);
    release_session(env, s);
    THROW(env, "mount: cannot start the request loop");
  }
  // Named here too, so that it is by the time mount returns: the thread's own naming may not have run yet.
  pthread_setname_np(s->loop, "drms-fuse");
  s->loop_running = 1;
  napi_value ext;
  napi_create_external(env, s, NULL, NULL, &ext);
  return ext;
}

// The connection of a mount whose requests never end (a writer stuck in the kernel) is aborted.
static void abort_connection(dev_t dev) {
  char p[96];
  snprintf(p, sizeof p, "/sys/fs/fuse/connections/%u/abort", minor(dev));
  int fd = open(p, O_WRONLY);
  if (fd < 0) return;
  if (write(fd, "1", 1) < 0) { /* already gone */ }
  close(fd);
}

static void abort_session(void *s) { abort_connection(((struct session *)s)->dev); }

struct unmount_work { struct session *s; napi_async_work work; napi_deferred deferred; };

static void unmount_execute(napi_env env, void *data) {
  struct session *s = ((struct unmount_work *)data)->s;
  // Detach: the kernel ends the connection once the last open file on it is closed, and the loop returns.
  umount2(s->mountpoint, MNT_DETACH);
  fuse_exit(s->fuse);
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 2;
  if (pthread_timedjoin_np(s->loop, NULL, &deadline) != 0) {
    abort_connection(s->dev);
    pthread_join(s->loop, NULL);
  }
  struct uring *u = __atomic_load_n(&s->uring, __ATOMIC_ACQUIRE);
  if (u) uring_stop(u, abort_session, s);
  fuse_unmount(s->fuse);
  fuse_destroy(s->fuse);
}

static void unmount_complete(napi_env env, napi_status status, void *data) {
  struct unmount_work *w = data;
  napi_value undef;
  napi_get_undefined(env, &undef);
  napi_resolve_deferred(env, w->deferred, undef);
  napi_delete_async_work(env, w->work);
  free(w);
}

// Queues `data`'s work on libuv's pool; the promise returned is settled by `done` through `*deferred`.
static napi_value queue_work(napi_env env, const char *what, napi_async_execute_callback execute, napi_async_complete_callback done,
                             void *data, napi_deferred *deferred, napi_async_work *work) {
  napi_value promise, name;
  napi_create_promise(env, deferred, &promise);
  napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, done, data, work);
  napi_queue_async_work(env, *work);
  return promise;
}

// unmount(session) -> Promise: JavaScript stays free meanwhile to answer requests still in flight. The session
// stays (its captured entries can still be taken) until release(session).
static napi_value js_unmount(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  struct session *s = NULL;
  if (argc < 1 || napi_get_value_external(env, argv[0], (void **)&s) != napi_ok || !s || !s->loop_running) THROW(env, "unmount: not mounted");
  s->loop_running = 0;
  struct unmount_work *w = calloc(1, sizeof *w);
  w->s = s;
  return queue_work(env, "drms-unmount", unmount_execute, unmount_complete, w, &w->deferred, &w->work);
}

// An Error whose errno is -e, as the FUSE bindings' callers expect, and whose code names it, as Node's fs errors do.
static napi_value errno_error(napi_env env, int e) {
  napi_value msg, err, errnum, code;
  const char *name = strerrorname_np(e);
  napi_create_string_utf8(env, strerror(e), NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, NULL, msg, &err);
  napi_create_int32(env, -e, &errnum);
  napi_set_named_property(env, err, "errno", errnum);
  if (name) {
    napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
    napi_set_named_property(env, err, "code", code);
  }
  return err;
}

static void throw_errno(napi_env env, int e) {
  napi_throw(env, errno_error(env, e));
}

static napi_value js_release(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  struct session *s = NULL;
  if (argc < 1 || napi_get_value_external(env, argv[0], (void **)&s) != napi_ok || !s || s->loop_running) THROW(env, "release: unmount first");
  release_session(env, s);
  return NULL;
}

// fallocate(fd, mode, offset, length) for JavaScript, which has no such call; throws an errno-carrying error.
static napi_value js_fallocate(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd, mode;
  int64_t off, len;
  napi_get_value_int32(env, argv[0], &fd);
  napi_get_value_int32(env, argv[1], &mode);
  napi_get_value_int64(env, argv[2], &off);
  napi_get_value_int64(env, argv[3], &len);
  if (fallocate(fd, mode, off, len) != 0) throw_errno(env, errno);
  return NULL;
}

// flushFile(fd, data, lo, hi, bytes) -> Promise<taken>: fdatasync (data) or fsync; then, once the file is on disk,
// the clean cached pages of what writes of `bytes` in all covered from `lo` to `hi` are given back (span_drop,
// pages.h). All on libuv's pool: for the backup, whose JavaScript thread applies the next entries meanwhile (a
// checkpoint's fadvise of 256 MiB took up to 17 ms there). Not taken: the span is not due yet (span_due), and
// gathers more writes first.
struct flush_file_work { int fd; bool data; bool due; int err; struct written_span span; napi_async_work work; napi_deferred deferred; };

static void flush_file_execute(napi_env env, void *data) {
  struct flush_file_work *w = data;
  if ((w->data ? fdatasync(w->fd) : fsync(w->fd)) != 0) {
    w->err = errno;
    return;
  }
  span_drop(w->fd, &w->span);
}

static void flush_file_complete(napi_env env, napi_status status, void *data) {
  struct flush_file_work *w = data;
  napi_value v;
  if (w->err == 0) {
    napi_get_boolean(env, w->due, &v);
    napi_resolve_deferred(env, w->deferred, v);
  } else {
    napi_reject_deferred(env, w->deferred, errno_error(env, w->err));
  }
  napi_delete_async_work(env, w->work);
  free(w);
}

static napi_value js_flush_file(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 5) THROW(env, "flushFile(fd, data, lo, hi, bytes)");
  struct flush_file_work *w = calloc(1, sizeof *w);
  int64_t lo, hi, bytes;
  napi_get_value_int32(env, argv[0], &w->fd);
  napi_get_value_bool(env, argv[1], &w->data);
  napi_get_value_int64(env, argv[2], &lo);
  napi_get_value_int64(env, argv[3], &hi);
  napi_get_value_int64(env, argv[4], &bytes);
  w->span = (struct written_span){ .lo = lo, .hi = hi, .bytes = bytes < 0 ? 0 : (uint64_t)bytes };
  w->due = span_due(&w->span);
  return queue_work(env, "drms-flush-file", flush_file_execute, flush_file_complete, w, &w->deferred, &w->work);
}

// crc32(data, value = 0) -> zlib's CRC-32 of `data`, continuing from `value`: ISA-L's, folded with carry-less
// multiplies (about 14x zlib's on 1 MiB here), for the frames and logs JavaScript seals and checks.
static napi_value js_crc32(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_typedarray_type type;
  size_t len = 0;
  void *data = NULL;
  uint32_t value = 0;
  if (argc < 1 || napi_get_typedarray_info(env, argv[0], &type, &len, &data, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "crc32: data must be a Uint8Array");
    return NULL;
  }
  if (argc > 1) napi_get_value_uint32(env, argv[1], &value);
  napi_create_uint32(env, crc32_gzip_refl(value, data, len), &out);
  return out;
}

// overwriteFlushable(fd) -> whether flushOverwritten is sound for the file's filesystem (flush.h).
static napi_value js_overwrite_flushable(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd = -1;
  napi_get_value_int32(env, argv[0], &fd);
  napi_get_boolean(env, overwrite_flushable(fd), &out);
  return out;
}

// flushOverwritten(fd, flushFd): the file's overwrites made durable (flush.h); throws an errno-carrying error.
static napi_value js_flush_overwritten(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd = -1, flush_fd = -1;
  napi_get_value_int32(env, argv[0], &fd);
  napi_get_value_int32(env, argv[1], &flush_fd);
  if (flush_overwritten(fd, flush_fd) != 0) throw_errno(env, errno);
  return NULL;
}

// openFlushFile(parent, dirName, name) -> fd of the flush file `parent/dirName/name` (flush.h); throws an
// errno-carrying error.
static napi_value js_open_flush_file(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char *s[3] = { NULL, NULL, NULL };
  for (size_t i = 0; i < argc && i < 3; i++) s[i] = get_string(env, argv[i]);
  int fd = -1, e = EINVAL;
  if (s[0] && s[1] && s[2]) {
    int dir = open(s[0], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    fd = dir < 0 ? -1 : flush_file_open(dir, s[1], s[2]);
    e = errno;
    if (dir >= 0) close(dir);
  }
  for (int i = 0; i < 3; i++) free(s[i]);
  if (fd < 0) {
    throw_errno(env, e);
    return NULL;
  }
  napi_create_int32(env, fd, &out);
  return out;
}

// lutimens(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec): times to the nanosecond, which Node's utimes rounds
// to the microsecond. Throws an errno-carrying error.
static napi_value js_lutimens(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char *path = argc == 5 ? get_string(env, argv[0]) : NULL;
  if (!path) THROW(env, "lutimens(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec)");
  int64_t v[4];
  for (int i = 0; i < 4; i++) napi_get_value_int64(env, argv[i + 1], &v[i]);
  struct timespec ts[2] = { { v[0], v[1] }, { v[2], v[3] } };
  int rc = utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW);
  free(path);
  if (rc != 0) throw_errno(env, errno);
  return NULL;
}

// namesExist(paths) -> Promise<Uint8Array>: for each path, 1 where lstat finds a name there or cannot tell, 0
// where it finds none. All of them in one trip through libuv's pool, where one lstat each cost two thread wake-ups.
struct names_work {
  napi_async_work work;
  napi_deferred deferred;
  uint32_t n;
  char **paths;
  uint8_t *found;
};

static void names_exist_execute(napi_env env, void *data) {
  (void)env;
  struct names_work *w = data;
  struct stat st;
  for (uint32_t i = 0; i < w->n; i++) w->found[i] = lstat(w->paths[i], &st) == 0 || errno != ENOENT;
}

static void names_exist_complete(napi_env env, napi_status status, void *data) {
  (void)status;
  struct names_work *w = data;
  napi_value buf, out;
  void *bytes;
  napi_create_arraybuffer(env, w->n, &bytes, &buf);
  memcpy(bytes, w->found, w->n);
  napi_create_typedarray(env, napi_uint8_array, w->n, buf, 0, &out);
  napi_resolve_deferred(env, w->deferred, out);
  napi_delete_async_work(env, w->work);
  for (uint32_t i = 0; i < w->n; i++) free(w->paths[i]);
  free(w->paths);
  free(w->found);
  free(w);
}

static napi_value js_names_exist(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool is_array = false;
  if (argc < 1 || napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array) THROW(env, "namesExist(paths)");
  struct names_work *w = calloc(1, sizeof *w);
  napi_get_array_length(env, argv[0], &w->n);
  w->paths = calloc(w->n ? w->n : 1, sizeof *w->paths);
  w->found = calloc(w->n ? w->n : 1, 1);
  for (uint32_t i = 0; i < w->n; i++) {
    napi_value v;
    napi_get_element(env, argv[0], i, &v);
    if (!(w->paths[i] = get_string(env, v))) {
      for (uint32_t j = 0; j < i; j++) free(w->paths[j]);
      free(w->paths);
      free(w->found);
      free(w);
      THROW(env, "namesExist: a path is not a string");
    }
  }
  return queue_work(env, "drms-names-exist", names_exist_execute, names_exist_complete, w, &w->deferred, &w->work);
}

static struct capture *capture_arg(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  struct session *s = NULL;
  napi_get_cb_info(env, info, argc, argv, NULL, NULL);
  if (*argc < 1 || napi_get_value_external(env, argv[0], (void **)&s) != napi_ok || !s || !s->capture) {
    napi_throw_error(env, NULL, "capture is not on for this session");
    return NULL;
  }
  return s->capture;
}

// fn(session) -> the number `value` gives of the session's capture.
static napi_value capture_number(napi_env env, napi_callback_info info, uint64_t (*value)(struct capture *)) {
  size_t argc = 1;
  napi_value argv[1], out;
  struct capture *c = capture_arg(env, info, &argc, argv);
  if (!c) return NULL;
  napi_create_double(env, (double)value(c), &out);
  return out;
}

// reserve(session) -> the next seq, for an entry JavaScript journals.
static napi_value js_reserve(napi_env env, napi_callback_info info) {
  return capture_number(env, info, capture_reserve);
}

// unreserve(session, seq) -> whether the seq was given back.
static napi_value js_unreserve(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out;
  struct capture *c = capture_arg(env, info, &argc, argv);
  if (!c) return NULL;
  int64_t seq;
  napi_get_value_int64(env, argv[1], &seq);
  napi_get_boolean(env, capture_unreserve(c, (uint64_t)seq), &out);
  return out;
}

// logFrame(session, kind, seq, body?): appends one of JavaScript's frames to the capture log.
static napi_value js_log_frame(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  struct capture *c = capture_arg(env, info, &argc, argv);
  if (!c) return NULL;
  int32_t kind;
  int64_t seq;
  napi_get_value_int32(env, argv[1], &kind);
  napi_get_value_int64(env, argv[2], &seq);
  void *body = NULL;
  size_t len = 0;
  if (argc >= 4) napi_get_buffer_info(env, argv[3], &body, &len);
  int rc = capture_log(c, kind, (uint64_t)seq, body, len);
  if (rc != 0) throw_errno(env, -rc);
  return NULL;
}

// A buffer take() handed over, collected: back to capture (capture_release_taken). V8 counts an external buffer's
// bytes toward its heap limits like any ArrayBuffer's.
static void free_taken(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  capture_release_taken(data);
}

// take(session): the captured frames since the last take, as an array of buffers (in seq order), or undefined.
static napi_value js_take(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  struct capture *c = capture_arg(env, info, &argc, argv);
  if (!c) return NULL;
  size_t n;
  struct capture_part *parts = capture_take(c, &n);
  if (!n) {
    free(parts);
    return NULL;
  }
  napi_create_array_with_length(env, n, &out);
  for (size_t i = 0; i < n; i++) {
    napi_value buf;
    // Not copied: a copy cost the JavaScript thread 1.2 ms a MiB written (its page faults included).
    if (napi_create_external_buffer(env, parts[i].len, parts[i].p, free_taken, NULL, &buf) != napi_ok) {
      void *copy;
      napi_create_buffer_copy(env, parts[i].len, parts[i].p, &copy, &buf);
      capture_release_taken(parts[i].p);
    }
    napi_set_element(env, out, (uint32_t)i, buf);
  }
  free(parts);
  return out;
}

// giveBack(buffer): the buffer's memory detached, for one nothing will read again (a buffer take() handed over, a
// socket chunk copied into a frame, a backup's batch once applied and acknowledged): its owner has it back at once (capture, for take()'s), and V8 stops counting it
// (an undetached one waits for a garbage collection, which the external bytes themselves bring on: with 1 MiB
// writes, a full one every few tens of milliseconds). Every view of it reads as empty from then on.
static napi_value js_give_back(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], ab;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_typedarray_type type;
  size_t len, offset;
  void *data;
  if (argc < 1 || napi_get_typedarray_info(env, argv[0], &type, &len, &data, &ab, &offset) != napi_ok) THROW(env, "giveBack: not a buffer");
  napi_detach_arraybuffer(env, ab);
  return NULL;
}

// setHandle(session, fh, mode): how the handle's writes are served (H_JS, H_CAPTURE, H_PLAIN, H_SYNC).
static napi_value js_set_handle(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  struct capture *c = capture_arg(env, info, &argc, argv);
  if (!c) return NULL;
  int64_t fh;
  int32_t mode;
  napi_get_value_int64(env, argv[1], &fh);
  napi_get_value_int32(env, argv[2], &mode);
  capture_set_mode(c, (uint64_t)fh, mode);
  capture_js_handle(c, (uint64_t)fh);
  return NULL;
}

// adoptHandle(session, fh): JavaScript took over a handle created natively (its writes came back there); its release
// goes to JavaScript from now.
static napi_value js_adopt_handle(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  struct capture *c = capture_arg(env, info, &argc, argv);
  if (!c) return NULL;
  int64_t fh;
  napi_get_value_int64(env, argv[1], &fh);
  capture_js_handle(c, (uint64_t)fh);
  return NULL;
}

// dropCache(session, path): the kernel forgets the file's pages and attributes, changed beneath the mount. Not with
// the writeback cache: its dirty pages would be written back through JavaScript, which waits here.
static napi_value js_drop_cache(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  struct session *s = NULL;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2 || napi_get_value_external(env, argv[0], (void **)&s) != napi_ok || !s || s->writeback) return NULL;
  char *path = get_string(env, argv[1]);
  if (path) fuse_invalidate_path(s->fuse, path); // -ENOENT: the kernel has no node for it, nothing cached
  free(path);
  return NULL;
}

// hold(session, on): captured writes wait from now (nested), or may go on.
static napi_value js_hold(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  struct capture *c = capture_arg(env, info, &argc, argv);
  if (!c) return NULL;
  bool on = false;
  napi_get_value_bool(env, argv[1], &on);
  capture_hold(c, on);
  return NULL;
}

// serveNames(session, on, createMode): renames, unlinks, rmdirs, mkdirs, symlinks and links are journaled and served
// natively from now, or in JavaScript; creates too unless createMode is H_JS (else new files' handles get that mode).
static napi_value js_serve_names(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  struct capture *c = capture_arg(env, info, &argc, argv);
  if (!c) return NULL;
  bool on = false;
  int32_t create_mode = H_JS;
  napi_get_value_bool(env, argv[1], &on);
  napi_get_value_int32(env, argv[2], &create_mode);
  capture_serve_names(c, on, create_mode);
  return NULL;
}

// namesChanged(session) -> how many namespace changes were served natively so far.
static napi_value js_names_changed(napi_env env, napi_callback_info info) {
  return capture_number(env, info, capture_names_changed);
}

static napi_value js_reset_handles(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  struct capture *c = capture_arg(env, info, &argc, argv);
  if (c) capture_reset_modes(c);
  return NULL;
}

// logBytes(session) -> bytes of frames in the active log.
static napi_value js_log_bytes(napi_env env, napi_callback_info info) {
  return capture_number(env, info, capture_log_bytes);
}

// A call on libuv's pool with the session's capture: the capture is not freed while it runs (capture_work_begin).
struct capture_work { struct capture *c; bool logged; int rc; napi_async_work work; napi_deferred deferred; };

static void checkpoint_execute(napi_env env, void *data) {
  struct capture_work *w = data;
  w->rc = w->logged ? capture_checkpoint(w->c) : capture_sync_tree(w->c);
  capture_work_end(w->c);
}

static void rotate_execute(napi_env env, void *data) {
  struct capture_work *w = data;
  w->rc = capture_rotate(w->c);
  capture_work_end(w->c);
}

static void capture_work_complete(napi_env env, napi_status status, void *data) {
  struct capture_work *w = data;
  napi_value v;
  if (w->rc == 0) {
    napi_get_undefined(env, &v);
    napi_resolve_deferred(env, w->deferred, v);
  } else {
    napi_reject_deferred(env, w->deferred, errno_error(env, -w->rc));
  }
  napi_delete_async_work(env, w->work);
  free(w);
}

// Runs `execute` with the session's capture on libuv's pool; the promise settles with its rc (capture_work_complete).
static napi_value queue_capture_work(napi_env env, struct capture *c, const char *what, napi_async_execute_callback execute, bool logged) {
  struct capture_work *w = calloc(1, sizeof *w);
  if (!w) THROW(env, "out of memory");
  w->c = c;
  w->logged = logged;
  capture_work_begin(c);
  return queue_work(env, what, execute, capture_work_complete, w, &w->deferred, &w->work);
}

// checkpoint(session, logged) -> Promise: syncs the mirrored tree on libuv's pool; logged: as a checkpoint in the
// capture log (see capture_checkpoint), else nothing is written there.
static napi_value js_checkpoint(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  struct capture *c = capture_arg(env, info, &argc, argv);
  if (!c) return NULL;
  bool logged = true;
  if (argc >= 2) napi_get_value_bool(env, argv[1], &logged);
  return queue_capture_work(env, c, "drms-checkpoint", checkpoint_execute, logged);
}

// rotate(session) -> Promise: the other log takes the frames from now on (see capture_rotate), on libuv's pool.
static napi_value js_rotate(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  struct capture *c = capture_arg(env, info, &argc, argv);
  if (!c) return NULL;
  return queue_capture_work(env, c, "drms-rotate", rotate_execute, false);
}

// ringEntries(session) -> the io_uring entries serving the mount (0: served through /dev/fuse).
static napi_value js_ring_entries(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  struct session *s = NULL;
  if (argc < 1 || napi_get_value_external(env, argv[0], (void **)&s) != napi_ok || !s) THROW(env, "ringEntries: not a session");
  struct uring *u = __atomic_load_n(&s->uring, __ATOMIC_ACQUIRE);
  napi_create_int32(env, u ? uring_ready(u) : 0, &out);
  return out;
}

// wantsCheckpoint(session) -> whether an fdatasync had to flush its file (see capture_wants_checkpoint).
static napi_value js_wants_checkpoint(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  struct capture *c = capture_arg(env, info, &argc, argv);
  if (!c) return NULL;
  napi_get_boolean(env, capture_wants_checkpoint(c), &out);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  // Properties as a JavaScript module's exports have: a test can watch a call (the applier's flushes).
  napi_property_descriptor props[] = {
    { "mount", NULL, js_mount, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "unmount", NULL, js_unmount, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "release", NULL, js_release, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "fallocate", NULL, js_fallocate, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "crc32", NULL, js_crc32, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "flushFile", NULL, js_flush_file, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "giveBack", NULL, js_give_back, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "overwriteFlushable", NULL, js_overwrite_flushable, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "flushOverwritten", NULL, js_flush_overwritten, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "openFlushFile", NULL, js_open_flush_file, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "lutimens", NULL, js_lutimens, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "namesExist", NULL, js_names_exist, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "reserve", NULL, js_reserve, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "unreserve", NULL, js_unreserve, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "logFrame", NULL, js_log_frame, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "take", NULL, js_take, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "setHandle", NULL, js_set_handle, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "adoptHandle", NULL, js_adopt_handle, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "hold", NULL, js_hold, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "dropCache", NULL, js_drop_cache, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "resetHandles", NULL, js_reset_handles, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "serveNames", NULL, js_serve_names, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "namesChanged", NULL, js_names_changed, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "rotate", NULL, js_rotate, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "logBytes", NULL, js_log_bytes, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "checkpoint", NULL, js_checkpoint, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "ringEntries", NULL, js_ring_entries, NULL, NULL, NULL, napi_default_jsproperty, NULL },
    { "wantsCheckpoint", NULL, js_wants_checkpoint, NULL, NULL, NULL, napi_default_jsproperty, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
