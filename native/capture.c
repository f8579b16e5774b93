// Capture: journals writes to mirrored files on libfuse's threads, so the hot path never waits for JavaScript.
// Journal first: under one lock a write takes the next seq, its entry is appended to the capture log, then the data
// is written. An fdatasync flushes only the log (concurrent ones share that flush: group commit): the log holds
// the data, and recovery writes it again after a power cut. That redo is sound while only captured writes follow
// the last checkpoint (a syncfs of the mirrored tree, then a checkpoint frame): any other frame (a namespace change,
// say) turns the fast path off until the next checkpoint, and one after fast fsyncs is preceded by a checkpoint.
// JavaScript takes the captured entries into the journal (lmdb) and ships them; its own entries take their seqs here
// too, so the journal has one order. Namespace changes (create, mkdir, symlink, link, rename, unlink, rmdir) are
// served and journaled here as JavaScript journals its own (an intent frame, then the final one) while nothing of
// its policy could refuse or redirect them.
#include "capture.h"
#include "flush.h"
#include "pages.h"

#include <errno.h>
#include <fcntl.h>
#include <isa-l/crc.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

// Captured entries JavaScript has not taken yet: writers wait beyond this.
#define PENDING_MAX (16u << 20)

#define SPAN_SLOTS 32

struct capture {
  pthread_mutex_t lock;      // seq order, the log, the handle table
  pthread_cond_t taken;      // room in the pending entries, or the hold lifted
  uint64_t next_seq;
  int log_fds[2];
  int active;
  uint64_t generation;
  uint64_t key;              // the active log's frames are sealed with it
  off_t log_size;            // where the active log's frames end (written under `lock`, read without it too)
  off_t file_end[2];         // each log file's size: every block below it was written (frames overwrite them)
  off_t ready[2];            // how far each log's blocks and size are on stable storage (a full flush covered them)
  int flush_fd;              // for flush_overwritten (flush.h); -1 where it is not sound
  uint64_t appended;         // bytes appended since start, never decreasing (atomic: read by the syncer)
  // The entries JavaScript takes next, appended under `lock` too (in seq order). Their own lock, so that a take
  // never waits for an operation that holds `lock` through its system calls (a namespace change, a write).
  pthread_mutex_t pending_lock;
  struct capture_part *parts;      // whole buffers, before `pending` in seq order: large frames, handed over as built
  size_t parts_n, parts_cap;
  char *pending;
  size_t pending_len, pending_cap;
  size_t waiting;                  // bytes of the parts and pending; read without pending_lock to wait for room (atomic)
  int notify_queued;
  int held;                  // capture_hold count: writers wait while it is not 0
  void (*notify)(void *);
  void *notify_arg;
  uint8_t *mode, *dirty;
  uint8_t *created;          // a handle capture_create opened that JavaScript has not taken over (capture_js_handle)
  size_t handles;

  int root_fd;               // the mirrored tree, for syncfs
  // Files that took large writes since the tree was last synced, whose pages it then gives back (pages.h); a few
  // at a time, found by their descriptor (fd -1: free; `kept`: a duplicate of a released handle's, see
  // capture_release_handle).
  struct handle_span { int fd; int kept; struct written_span span; } spans[SPAN_SLOTS];
  int fast;                  // fdatasync may flush only the log: only captured writes since the last checkpoint
  int fast_acked;            // an fdatasync was answered that way since the last checkpoint
  int want_checkpoint;       // an fdatasync could not be (JavaScript asks through capture_wants_checkpoint)
  uint64_t js_frames;        // frames of JavaScript's appended so far (and of namespace changes served here)
  int names;                 // namespace changes may be served here (capture_serve_names)
  int create_mode;           // the handle mode of files created here; H_JS: JavaScript creates them
  uint64_t names_changed;    // namespace changes served here so far

  pthread_t syncer;
  pthread_mutex_t sync_lock; // group commit
  pthread_cond_t sync_req;
  struct waiter *waiters;    // threads waiting for the log to be durable (log_durable)
  uint64_t requested;        // how far the syncer is asked to make the log durable
  uint64_t written, synced;  // how far the log is written out to the disk, and durable (a cache flush after that)
  int writing, flushing;     // a write-out, a cache flush running (one of each at a time; they overlap)
  uint64_t flush_covers;     // how far the running cache flush makes the log durable: `written` when it began
  int sync_error;
  int stop;

  // JavaScript's calls running on libuv's pool: capture_free waits for them (under `lock`).
  int works;
  pthread_cond_t works_done;
};

// ---- msgpack, the journal's entry encoding (decoded by msgpackr in JavaScript) ----

struct buf { char *p; size_t len, cap; };

static int grow(struct buf *b, size_t n) {
  if (b->len + n <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + n) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) return -ENOMEM;
  b->p = p;
  b->cap = cap;
  return 0;
}

static void put(struct buf *b, const void *src, size_t n) {
  if (grow(b, n) == 0) {
    memcpy(b->p + b->len, src, n);
    b->len += n;
  }
}

static void put_u8(struct buf *b, uint8_t v) { put(b, &v, 1); }

static void put_be(struct buf *b, uint64_t v, int bytes) {
  uint8_t x[8];
  for (int i = 0; i < bytes; i++) x[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
  put(b, x, (size_t)bytes);
}

static void mp_f64(struct buf *b, double d) {
  uint64_t v;
  memcpy(&v, &d, 8);
  put_u8(b, 0xcb);
  put_be(b, v, 8);
}

// Unsigned integers as msgpackr writes them: above 32 bits as a float64 (exact up to 2^53).
static void mp_uint(struct buf *b, uint64_t v) {
  if (v <= 0x7f) put_u8(b, (uint8_t)v);
  else if (v <= 0xff) { put_u8(b, 0xcc); put_be(b, v, 1); }
  else if (v <= 0xffff) { put_u8(b, 0xcd); put_be(b, v, 2); }
  else if (v <= 0xffffffffu) { put_u8(b, 0xce); put_be(b, v, 4); }
  else mp_f64(b, (double)v);
}

static void mp_str(struct buf *b, const char *s, size_t n) {
  if (n < 32) put_u8(b, (uint8_t)(0xa0 | n));
  else if (n <= 0xff) { put_u8(b, 0xd9); put_be(b, n, 1); }
  else if (n <= 0xffff) { put_u8(b, 0xda); put_be(b, n, 2); }
  else { put_u8(b, 0xdb); put_be(b, n, 4); }
  put(b, s, n);
}

static void mp_key(struct buf *b, const char *s) { mp_str(b, s, strlen(s)); }

static void mp_bin(struct buf *b, const void *data, size_t n) {
  if (n <= 0xff) { put_u8(b, 0xc4); put_be(b, n, 1); }
  else if (n <= 0xffff) { put_u8(b, 0xc5); put_be(b, n, 2); }
  else { put_u8(b, 0xc6); put_be(b, n, 4); }
  put(b, data, n);
}

static void mp_time(struct buf *b, const struct timespec *ts) {
  put_u8(b, 0x92);
  mp_uint(b, (uint64_t)ts->tv_sec);
  mp_uint(b, (uint64_t)ts->tv_nsec);
}

// [path, atime, mtime]: a stamp, as JavaScript's entries carry the times an operation left.
static void mp_stamp(struct buf *b, const char *path, const struct stat *st) {
  put_u8(b, 0x93);
  mp_key(b, path);
  mp_time(b, &st->st_atim);
  mp_time(b, &st->st_mtim);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec * 1000 + (double)(ts.tv_nsec / 1000000);
}

// Starts a frame: the header is filled in by frame_end.
static void frame_begin(struct buf *b) {
  b->len = 0;
  grow(b, FRAME_HEADER);
  b->len = FRAME_HEADER;
}

static void frame_end(struct buf *b, int kind, uint64_t seq) {
  uint32_t len = (uint32_t)(b->len - FRAME_HEADER);
  memcpy(b->p, &len, 4);
  b->p[4] = (char)kind;
  memcpy(b->p + 5, &seq, 8);
}

// {op, path, ...fields, seq, ts[, done]}: the caller writes `fields` map pairs between the two halves.
static void entry_head(struct buf *b, int pairs, const char *op, const char *path) {
  frame_begin(b);
  put_u8(b, (uint8_t)(0x80 | pairs));
  mp_key(b, "op");
  mp_key(b, op);
  mp_key(b, "path");
  mp_key(b, path);
}

static void entry_tail(struct buf *b, uint64_t seq, int done) {
  mp_key(b, "seq");
  mp_uint(b, seq);
  mp_key(b, "ts");
  mp_f64(b, now_ms());
  if (done) {
    mp_key(b, "done");
    put_u8(b, 0xc3);
  }
}

// ---- the log ----

static int pwrite_all(int fd, const char *p, size_t n, off_t off) {
  while (n) {
    ssize_t w = pwrite(fd, p, n, off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += w;
    off += w;
    n -= (size_t)w;
  }
  return 0;
}

// The frame's checksum, over the log's key, header and body: after a power cut a reader stops at a torn frame
// (or at what an older generation left in the file), not redoing what it holds.
static void seal(struct buf *frame, uint64_t key) {
  uint32_t v = crc32_gzip_refl(0, (const unsigned char *)&key, 8);
  v = crc32_gzip_refl(v, (const unsigned char *)frame->p, FRAME_CRC_AT);
  v = crc32_gzip_refl(v, (const unsigned char *)frame->p + FRAME_HEADER, (uint64_t)(frame->len - FRAME_HEADER));
  memcpy(frame->p + FRAME_CRC_AT, &v, 4);
}

// The logs are written ahead with zeros, a MiB at a time up to LOG_KEEP, and kept from one generation to the
// next: frames overwrite blocks the file already has, so once a full flush has made those blocks and the size
// durable (ready), flushing a frame commits nothing in the filesystem's journal (flush_overwritten).
#define LOG_CHUNK ((off_t)1 << 20)
#define LOG_KEEP ((off_t)128 << 20) // JavaScript rotates past 64 MiB: room for as much again while it does

static const char zeros[LOG_CHUNK];

// Grows the active log with zeros to cover `end` (lock held). On failure (a full disk) the file is cut back and
// the frame grows it itself.
static void extend(struct capture *c, int fd, off_t end) {
  off_t from = c->file_end[c->active];
  if (end <= from || end > LOG_KEEP) return;
  off_t to = (end + LOG_CHUNK - 1) / LOG_CHUNK * LOG_CHUNK;
  for (off_t at = from; at < to; at += LOG_CHUNK) {
    if (pwrite_all(fd, zeros, (size_t)(to - at < LOG_CHUNK ? to - at : LOG_CHUNK), at) != 0) {
      if (ftruncate(fd, from) != 0) { /* the zeros stay: they read as the log's end */ }
      return;
    }
  }
  c->file_end[c->active] = to;
}

// Takes back the active log's frames from `at` on (lock held): a header of zeros there ends the log for a
// reader, and what a failed write grew the file by is cut off (on a full disk, that gives the space back).
static void cut(struct capture *c, off_t at) {
  int a = c->active, fd = c->log_fds[a];
  if (at >= c->file_end[a]) c->file_end[a] = at;
  if (ftruncate(fd, c->file_end[a]) != 0) { /* the reader stops at the torn frame */ }
  off_t n = c->file_end[a] - at < FRAME_HEADER ? c->file_end[a] - at : FRAME_HEADER;
  if (n > 0 && pwrite_all(fd, zeros, (size_t)n, at) != 0) { /* as above */ }
  __atomic_store_n(&c->log_size, at, __ATOMIC_RELAXED);
}

// Appends a frame (lock held); a frame that could not be written whole is cut off again.
static int append(struct capture *c, struct buf *frame) {
  seal(frame, c->key);
  int fd = c->log_fds[c->active];
  off_t at = c->log_size, end = at + (off_t)frame->len;
  extend(c, fd, end);
  int rc = pwrite_all(fd, frame->p, frame->len, at);
  if (rc != 0) {
    cut(c, at);
    return rc;
  }
  if (end > c->file_end[c->active]) c->file_end[c->active] = end;
  __atomic_store_n(&c->log_size, end, __ATOMIC_RELAXED);
  __atomic_store_n(&c->appended, c->appended + frame->len, __ATOMIC_RELEASE);
  return 0;
}

// Buffers JavaScript took and let go of (capture_release_taken), up to 4 of 8 MiB kept mapped for the next
// hand-overs and large frames: a new one's page faults were 23% of a FUSE thread's time with 1 MiB writes (with the
// spares, the primary's CPU a MiB 5% lower). Process-wide, so a session's end frees nothing JavaScript still holds.
#define SPARES 4
#define SPARE_MAX ((size_t)8 << 20)
static pthread_mutex_t spares_lock = PTHREAD_MUTEX_INITIALIZER;
static char *spares[SPARES];
static int spare_count;

void capture_release_taken(char *p) {
  if (malloc_usable_size(p) <= SPARE_MAX) {
    pthread_mutex_lock(&spares_lock);
    if (spare_count < SPARES) {
      spares[spare_count++] = p;
      p = NULL;
    }
    pthread_mutex_unlock(&spares_lock);
  }
  free(p);
}

// A spare of at least `min` bytes, or NULL.
static char *spare(size_t min) {
  char *p = NULL;
  pthread_mutex_lock(&spares_lock);
  for (int i = spare_count - 1; i >= 0; i--) {
    if (malloc_usable_size(spares[i]) >= min) {
      p = spares[i];
      spares[i] = spares[--spare_count];
      break;
    }
  }
  pthread_mutex_unlock(&spares_lock);
  return p;
}

// Room for `n` more parts (pending_lock held); false if there is no memory for it.
static int parts_room(struct capture *c, size_t n) {
  if (c->parts_n + n <= c->parts_cap) return 1;
  size_t cap = c->parts_cap ? c->parts_cap : 8;
  while (cap < c->parts_n + n) cap *= 2;
  struct capture_part *parts = realloc(c->parts, cap * sizeof *parts);
  if (!parts) return 0;
  c->parts = parts;
  c->parts_cap = cap;
  return 1;
}

// Ends `pending` (pending_lock held, room for one more part): what it holds becomes the next part.
static void close_pending(struct capture *c) {
  if (c->pending_len) c->parts[c->parts_n++] = (struct capture_part){ c->pending, c->pending_len };
  else free(c->pending);
  c->pending = NULL;
  c->pending_len = c->pending_cap = 0;
}

// Frames this large are handed over in the buffer they were built in, not copied into `pending`: with 1 MiB writes
// that copy went to new memory, faulted in page by page.
#define PART_MIN ((size_t)64 << 10)

// Hands a captured entry to JavaScript (lock held); returns whether JavaScript must be told. A large frame's buffer
// is taken from `frame` (its p set to NULL).
static int hand_over(struct capture *c, struct buf *frame) {
  size_t len = frame->len;
  pthread_mutex_lock(&c->pending_lock);
  if (len >= PART_MIN && parts_room(c, 2)) {
    close_pending(c);
    c->parts[c->parts_n++] = (struct capture_part){ frame->p, frame->len };
    frame->p = NULL;
    frame->len = frame->cap = 0;
  } else {
    size_t need = c->pending_len + len;
    if (!c->pending) {
      c->pending = spare(need);
      c->pending_cap = c->pending ? malloc_usable_size(c->pending) : 0;
    }
    if (need > c->pending_cap) {
      size_t cap = c->pending_cap ? c->pending_cap : 65536;
      while (cap < need) cap *= 2;
      char *p = realloc(c->pending, cap);
      if (!p) {
        pthread_mutex_unlock(&c->pending_lock);
        return 0; // the entry is in the log: recovery or the next start takes it
      }
      c->pending = p;
      c->pending_cap = cap;
    }
    memcpy(c->pending + c->pending_len, frame->p, len);
    c->pending_len = need;
  }
  __atomic_store_n(&c->waiting, c->waiting + len, __ATOMIC_RELAXED);
  int tell = !c->notify_queued;
  c->notify_queued = 1;
  pthread_mutex_unlock(&c->pending_lock);
  return tell;
}

// Whether a writer must wait (lock held) before it appends: JavaScript has not taken what is pending, or holds writes.
static int must_wait(struct capture *c) {
  return (__atomic_load_n(&c->waiting, __ATOMIC_RELAXED) > PENDING_MAX || c->held) && !c->stop;
}

// Group commit in two stages, as the block layer does for fdatasyncs of many files: the log's dirty pages are
// written out, then the disk's cache is flushed; a write-out runs while the previous cache flush does. A waiter
// whose frame the running stage does not cover starts the next one when it ends; the others wait. Against whole
// flushes two at a time, 8 writers with the primary alone: 16,800 → 17,600 records/s (means of 4 and 8 runs; the
// wait for durable stays about 335 µs: a write-out and a cache flush take about 95 and 88 µs here, and the primary's
// threads wait 41 µs a record in run queues, on two CPUs shared with the 8 writers).

// A thread in log_durable waiting for a stage: each has its own condition, so that a stage's end wakes only the
// waiters it made durable and those that start the next stage (a broadcast woke about one waiter a record for
// nothing, with 8 writers).
struct waiter {
  uint64_t target;
  int woken;
  pthread_cond_t cond;
  struct waiter *next;
};

// Wakes (sync_lock held) the waiters that are durable now, every one after a failure, and one to start each stage
// that is idle and wanted: a write-out for a frame not yet written out, a cache flush for one written out only
// (unless the caller goes on to run it: it just wrote out its own frame).
static void wake_waiters(struct capture *c, int caller_flushes) {
  int write_free = !c->writing, flush_free = !c->flushing && !caller_flushes;
  for (struct waiter **p = &c->waiters; *p;) {
    struct waiter *w = *p;
    int done = w->target <= c->synced || c->sync_error;
    int starts_write = !done && write_free && w->target > c->written;
    int starts_flush = !done && flush_free && w->target <= c->written;
    if (!done && !starts_write && !starts_flush) {
      p = &w->next;
      continue;
    }
    if (starts_write) write_free = 0;
    if (starts_flush) flush_free = 0;
    *p = w->next;
    w->woken = 1;
    pthread_cond_signal(&w->cond);
  }
}

static void wait_stage(struct capture *c, uint64_t target) {
  struct waiter w = { .target = target };
  pthread_cond_init(&w.cond, NULL);
  w.next = c->waiters;
  c->waiters = &w;
  while (!w.woken) pthread_cond_wait(&w.cond, &c->sync_lock);
  pthread_cond_destroy(&w.cond);
}

// After a stage (sync_lock held): its error or its progress, then whoever comes next.
static void stage_done(struct capture *c, int rc, int e, int caller_flushes) {
  if (rc != 0) c->sync_error = e;
  else c->sync_error = 0;
  wake_waiters(c, rc == 0 && caller_flushes);
  if (c->requested > c->synced) pthread_cond_signal(&c->sync_req);
}

// Writes the log out (sync_lock held, dropped while it runs): every frame appended before it then is on the disk,
// durable once a cache flush begun after it ends. Where flush_overwritten is not sound, an fdatasync of the log
// does both stages at once.
static void write_stage(struct capture *c) {
  c->writing = 1;
  // Read in this order: a rotation between the two has already flushed every frame up to `upto`.
  uint64_t upto = __atomic_load_n(&c->appended, __ATOMIC_ACQUIRE);
  pthread_mutex_unlock(&c->sync_lock);
  pthread_mutex_lock(&c->lock);
  int a = c->active, fd = c->log_fds[a];
  int overwrite = c->flush_fd >= 0 && c->log_size <= c->ready[a];
  off_t end = c->file_end[a];
  uint64_t generation = c->generation;
  pthread_mutex_unlock(&c->lock);
  int rc = overwrite ? write_out(fd) : fdatasync(fd);
  int e = errno;
  if (rc == 0 && !overwrite) {
    // Everything the file held when it began is durable, its size and blocks too.
    pthread_mutex_lock(&c->lock);
    if (c->generation == generation && end > c->ready[a]) c->ready[a] = end;
    pthread_mutex_unlock(&c->lock);
  }
  pthread_mutex_lock(&c->sync_lock);
  c->writing = 0;
  if (rc == 0 && upto > c->written) c->written = upto;
  if (rc == 0 && !overwrite && upto > c->synced) c->synced = upto;
  stage_done(c, rc, e, c->written > c->synced);
}

// Flushes the disk's cache (sync_lock held, dropped while it runs): what was written out before it began is durable.
static void flush_stage(struct capture *c) {
  c->flushing = 1;
  c->flush_covers = c->written;
  pthread_mutex_unlock(&c->sync_lock);
  int rc = fdatasync(c->flush_fd >= 0 ? c->flush_fd : c->log_fds[__atomic_load_n(&c->active, __ATOMIC_ACQUIRE)]);
  int e = errno;
  pthread_mutex_lock(&c->sync_lock);
  c->flushing = 0;
  if (rc == 0 && c->flush_covers > c->synced) c->synced = c->flush_covers;
  stage_done(c, rc, e, 0);
}

// Runs the stage that brings the log closer to durable up to `target`, or waits for it (sync_lock held).
static void advance(struct capture *c, uint64_t target) {
  if (c->written < target) {
    if (c->writing) wait_stage(c, target);
    else write_stage(c);
  } else if (c->flushing) {
    wait_stage(c, target);
  } else {
    flush_stage(c);
  }
}

// Makes the log durable when asked to in the background (an fsync that flushes its file meanwhile, a failed flush).
static void *syncer_main(void *arg) {
  struct capture *c = arg;
  pthread_setname_np(pthread_self(), "drms-sync");
  pthread_mutex_lock(&c->sync_lock);
  for (;;) {
    // Only what it can start: a busy stage's end signals again.
    while (!c->stop && (c->requested <= c->synced || (c->requested > c->written ? c->writing : c->flushing))) pthread_cond_wait(&c->sync_req, &c->sync_lock);
    if (c->stop) break;
    if (c->requested > c->written) write_stage(c);
    else flush_stage(c);
  }
  pthread_mutex_unlock(&c->sync_lock);
  return NULL;
}

// No stage of the group commit runs or is awaited (read without sync_lock: a hint for capture_write).
static int log_idle(struct capture *c) {
  return !__atomic_load_n(&c->writing, __ATOMIC_RELAXED) && !__atomic_load_n(&c->flushing, __ATOMIC_RELAXED) &&
         !__atomic_load_n(&c->waiters, __ATOMIC_RELAXED);
}

// Waits until the log is on stable storage up to `target`. The stages are shared with every waiter meanwhile (group
// commit), and run by the waiters themselves when none is running: no hand-off to another thread on the way.
static int log_durable(struct capture *c, uint64_t target) {
  pthread_mutex_lock(&c->sync_lock);
  int rc = 0;
  while (c->synced < target) {
    if (c->sync_error) {
      rc = -c->sync_error;
      if (c->requested < target) c->requested = target;
      pthread_cond_signal(&c->sync_req); // the syncer tries again: a success ends the error
      break;
    }
    advance(c, target);
  }
  pthread_mutex_unlock(&c->sync_lock);
  return rc;
}

struct capture *capture_new(int root_fd, const int log_fds[2], int active, uint64_t generation, uint64_t key, int flush_fd, uint64_t next_seq, void (*notify)(void *), void *notify_arg) {
  struct capture *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  struct rlimit rl;
  c->handles = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (1u << 22) ? rl.rlim_cur : (1u << 20);
  c->mode = calloc(c->handles, 1);
  c->dirty = calloc(c->handles, 1);
  c->created = calloc(c->handles, 1);
  for (int i = 0; i < SPAN_SLOTS; i++) c->spans[i].fd = -1;
  c->root_fd = root_fd;
  c->log_fds[0] = log_fds[0];
  c->log_fds[1] = log_fds[1];
  c->active = active;
  c->generation = generation;
  c->key = key;
  c->next_seq = next_seq;
  c->notify = notify;
  c->notify_arg = notify_arg;
  // The journal flushed both logs after starting them: what they hold is durable.
  for (int i = 0; i < 2; i++) {
    struct stat st;
    c->file_end[i] = c->ready[i] = fstat(log_fds[i], &st) == 0 ? st.st_size : 0;
  }
  c->log_size = GENERATION_FRAME;
  c->flush_fd = overwrite_flushable(log_fds[active]) ? flush_fd : -1;
  pthread_mutex_init(&c->lock, NULL);
  pthread_cond_init(&c->taken, NULL);
  pthread_mutex_init(&c->pending_lock, NULL);
  pthread_mutex_init(&c->sync_lock, NULL);
  pthread_cond_init(&c->sync_req, NULL);
  pthread_cond_init(&c->works_done, NULL);
  if (!c->mode || !c->dirty || !c->created || pthread_create(&c->syncer, NULL, syncer_main, c) != 0) {
    free(c->mode);
    free(c->dirty);
    free(c->created);
    free(c);
    return NULL;
  }
  return c;
}

void capture_work_begin(struct capture *c) {
  pthread_mutex_lock(&c->lock);
  c->works++;
  pthread_mutex_unlock(&c->lock);
}

void capture_work_end(struct capture *c) {
  pthread_mutex_lock(&c->lock);
  if (--c->works == 0) pthread_cond_broadcast(&c->works_done);
  pthread_mutex_unlock(&c->lock);
}

// Every span forgotten, kept duplicates closed (lock held, or the capture no longer used).
static void forget_spans(struct capture *c) {
  for (int i = 0; i < SPAN_SLOTS; i++) {
    if (c->spans[i].kept) close(c->spans[i].fd);
    c->spans[i].fd = -1;
    c->spans[i].kept = 0;
  }
}

void capture_free(struct capture *c) {
  pthread_mutex_lock(&c->lock);
  while (c->works > 0) pthread_cond_wait(&c->works_done, &c->lock);
  pthread_mutex_unlock(&c->lock);
  pthread_mutex_lock(&c->sync_lock);
  c->stop = 1;
  pthread_cond_broadcast(&c->sync_req);
  pthread_mutex_unlock(&c->sync_lock);
  pthread_join(c->syncer, NULL);
  pthread_mutex_lock(&c->lock);
  c->stop = 1;
  pthread_cond_broadcast(&c->taken);
  pthread_mutex_unlock(&c->lock);
  forget_spans(c);
  free(c->mode);
  free(c->dirty);
  free(c->created);
  for (size_t i = 0; i < c->parts_n; i++) free(c->parts[i].p);
  free(c->parts);
  free(c->pending);
  free(c);
}

// The handle's written span, its slot taken if it has none; NULL when every slot is taken (lock held).
static struct written_span *span_of(struct capture *c, int fd) {
  int free_slot = -1;
  for (int i = 0; i < SPAN_SLOTS; i++) {
    if (c->spans[i].fd == fd) return &c->spans[i].span;
    if (c->spans[i].fd == -1 && free_slot < 0) free_slot = i;
  }
  if (free_slot < 0) return NULL;
  c->spans[free_slot].fd = fd;
  c->spans[free_slot].span = (struct written_span){ 0 };
  return &c->spans[free_slot].span;
}

// The handle's span, taken out if it is due (lock held): else an empty one.
static struct written_span take_due_span(struct capture *c, int fd) {
  for (int i = 0; i < SPAN_SLOTS; i++) {
    if (c->spans[i].fd != fd || !span_due(&c->spans[i].span)) continue;
    c->spans[i].fd = -1;
    return c->spans[i].span;
  }
  return (struct written_span){ 0 };
}

// A closed or reassigned handle's span is forgotten: its number may name another file next (lock held). A kept
// slot's number is a duplicate this capture holds open: no handle has it.
static void forget_span(struct capture *c, int fd) {
  for (int i = 0; i < SPAN_SLOTS; i++) if (c->spans[i].fd == fd) c->spans[i].fd = -1;
}

int capture_mode(struct capture *c, uint64_t fh) {
  return c && fh < c->handles ? __atomic_load_n(&c->mode[fh], __ATOMIC_ACQUIRE) : H_JS;
}

static void set_mode(struct capture *c, uint64_t fh, int mode) {
  __atomic_store_n(&c->mode[fh], (uint8_t)mode, __ATOMIC_RELEASE);
  c->dirty[fh] = 0;
  forget_span(c, (int)fh);
}

void capture_set_mode(struct capture *c, uint64_t fh, int mode) {
  if (fh >= c->handles) return;
  pthread_mutex_lock(&c->lock);
  set_mode(c, fh, mode);
  pthread_mutex_unlock(&c->lock);
}

void capture_release_handle(struct capture *c, uint64_t fh) {
  if (fh >= c->handles) return;
  pthread_mutex_lock(&c->lock);
  // A due span whose fdatasync the log alone answered (fast_acked) still has dirty pages in the file: the tree's next
  // sync, which comes before the next name change or checkpoint, gives them back through a duplicate.
  for (int i = 0; i < SPAN_SLOTS; i++) {
    if (c->spans[i].fd != (int)fh) continue;
    int dup = c->fast_acked && span_due(&c->spans[i].span) ? fcntl((int)fh, F_DUPFD_CLOEXEC, 0) : -1;
    c->spans[i].fd = dup;
    c->spans[i].kept = dup >= 0;
  }
  set_mode(c, fh, H_JS);
  pthread_mutex_unlock(&c->lock);
}

void capture_js_handle(struct capture *c, uint64_t fh) {
  if (fh < c->handles) __atomic_store_n(&c->created[fh], 0, __ATOMIC_RELEASE);
}

int capture_js_owns(struct capture *c, uint64_t fh) {
  return fh >= c->handles || !__atomic_load_n(&c->created[fh], __ATOMIC_ACQUIRE);
}

void capture_reset_modes(struct capture *c) {
  pthread_mutex_lock(&c->lock);
  for (size_t i = 0; i < c->handles; i++) __atomic_store_n(&c->mode[i], H_JS, __ATOMIC_RELEASE);
  forget_spans(c);
  pthread_mutex_unlock(&c->lock);
}

static void write_frame(struct buf *b, const char *path, off_t off, const char *data, size_t size, uint64_t seq) {
  // A large frame's buffer is sized to it (with room for the keys): hand_over keeps it for JavaScript.
  size_t need = size + strlen(path) + 256;
  if (!b->p && need >= PART_MIN) {
    b->p = spare(need);
    if (!b->p) b->p = malloc(need);
    b->cap = b->p ? malloc_usable_size(b->p) : 0;
  }
  entry_head(b, 6, "write", path);
  mp_key(b, "offset");
  mp_uint(b, (uint64_t)off);
  mp_key(b, "data");
  mp_bin(b, data, size);
  entry_tail(b, seq, 0);
  frame_end(b, FRAME_CAPTURED, seq);
}

int capture_write(struct capture *c, const char *path, int fd, const char *data, size_t size, off_t off) {
  struct buf b = { 0 };
  int notify = 0;
  ssize_t written;
  pthread_mutex_lock(&c->lock);
  while (must_wait(c)) pthread_cond_wait(&c->taken, &c->lock);
  // Still captured? A handle turned back to JavaScript while this writer waited goes there.
  if (!captured(capture_mode(c, (uint64_t)fd))) {
    pthread_mutex_unlock(&c->lock);
    return -EAGAIN;
  }
  uint64_t seq = c->next_seq;
  write_frame(&b, path, off, data, size, seq);
  int rc = append(c, &b);
  if (rc != 0) {
    // The log cannot take it (a full disk): JavaScript journals it or refuses it, and says so.
    pthread_mutex_unlock(&c->lock);
    free(b.p);
    return -EAGAIN;
  }
  written = pwrite(fd, data, size, off);
  if (written < 0 || (size_t)written < size) {
    // The entry must say what landed: nothing (cut it off again), or a short write (journal that instead).
    int e = errno;
    cut(c, c->log_size - (off_t)b.len);
    if (written <= 0) {
      pthread_mutex_unlock(&c->lock);
      free(b.p);
      return written < 0 ? -e : 0;
    }
    size = (size_t)written;
    write_frame(&b, path, off, data, size, seq);
    rc = append(c, &b);
    if (rc != 0) {
      pthread_mutex_unlock(&c->lock);
      free(b.p);
      return rc;
    }
  }
  c->next_seq++;
  // The handle's first write since its last fsync or flush: in a transaction log's loop an fdatasync follows.
  int after_flush = !c->dirty[fd];
  c->dirty[fd] = 1;
  if (size >= SPAN_MIN_WRITE) {
    struct written_span *span = span_of(c, fd);
    if (span) span_note(span, off, size);
  }
  // Not in sync mode: its fsync journals the marker before the flush, which then writes the page again.
  int early = after_flush && capture_mode(c, (uint64_t)fd) == H_CAPTURE && __atomic_load_n(&c->fast, __ATOMIC_RELAXED) &&
              log_idle(c);
  int log_fd = c->log_fds[c->active];
  // Read before hand_over, which takes a large frame's buffer and its length.
  off_t frame_at = c->log_size - (off_t)b.len, frame_len = (off_t)b.len;
  notify = hand_over(c, &b);
  pthread_mutex_unlock(&c->lock);
  free(b.p);
  // Where the log alone answers fdatasyncs and no stage runs or is awaited (one writer), the frame's write-out
  // starts now, while the reply and the fdatasync's request make their trips: its write stage then only waits for it
  // (1 writer, 4 alternating pairs of 3 s: p50 148-158 µs a record against 160-176, 14% more records a second;
  // 8 writers, 4 pairs: no change).
  if (early) sync_file_range(log_fd, frame_at, frame_len, SYNC_FILE_RANGE_WRITE);
  if (notify) c->notify(c->notify_arg);
  return (int)written;
}

// A captured marker's frame: `op` (times, fsync) for the file, done, with the file's times in `st` if given.
static void marker_frame(struct buf *b, const char *op, const char *path, const struct stat *st, uint64_t seq) {
  entry_head(b, st ? 6 : 5, op, path);
  if (st) {
    mp_key(b, "stamps");
    put_u8(b, 0x91);
    mp_stamp(b, path, st);
  }
  entry_tail(b, seq, 1);
  frame_end(b, FRAME_CAPTURED, seq);
}

// Journals `op` (times, fsync) for the file, with its times if it was written through capture since (lock held);
// its seq goes to `marked`.
static int mark(struct capture *c, struct buf *b, const char *op, const char *path, int fd, int *notify, uint64_t *marked) {
  int stamped = c->dirty[fd];
  struct stat st;
  if (stamped && fstat(fd, &st) != 0) return -errno;
  uint64_t seq = c->next_seq;
  marker_frame(b, op, path, stamped ? &st : NULL, seq);
  int rc = append(c, b);
  if (rc != 0) return rc;
  *marked = c->next_seq++;
  c->dirty[fd] = 0;
  *notify |= hand_over(c, b);
  return 0;
}

int capture_flush(struct capture *c, const char *path, int fd, capture_marked_fn marked, void *arg) {
  struct buf b = { 0 };
  int notify = 0, rc = 0;
  uint64_t seq = 0;
  pthread_mutex_lock(&c->lock);
  if (c->dirty[fd]) rc = mark(c, &b, "times", path, fd, &notify, &seq);
  pthread_mutex_unlock(&c->lock);
  free(b.p);
  if (notify) c->notify(c->notify_arg);
  if (seq && marked) marked(arg, seq);
  return rc;
}

int capture_times(struct capture *c, const char *path, int fd, const struct timespec tv[2]) {
  struct buf b = { 0 };
  struct stat st;
  int notify = 0, rc = 0;
  pthread_mutex_lock(&c->lock);
  if (!captured(capture_mode(c, (uint64_t)fd))) rc = -EAGAIN;
  else if (fstat(fd, &st) != 0) rc = -errno;
  if (rc == 0) {
    // Resolved before the frame, which must carry what is set: a redo sets the same.
    struct timespec now, ts[2];
    clock_gettime(CLOCK_REALTIME, &now);
    for (int i = 0; i < 2; i++) {
      const struct timespec *current = i ? &st.st_mtim : &st.st_atim;
      ts[i] = tv[i].tv_nsec == UTIME_NOW ? now : tv[i].tv_nsec == UTIME_OMIT ? *current : tv[i];
    }
    st.st_atim = ts[0];
    st.st_mtim = ts[1];
    marker_frame(&b, "times", path, &st, c->next_seq);
    // A log that cannot take it (a full disk): JavaScript journals it or refuses it, as for a write.
    if (append(c, &b) != 0) rc = -EAGAIN;
    else if (futimens(fd, ts) != 0) {
      rc = -errno;
      cut(c, c->log_size - (off_t)b.len);
    } else {
      c->next_seq++;
      c->dirty[fd] = 0;
      notify = hand_over(c, &b);
    }
  }
  pthread_mutex_unlock(&c->lock);
  free(b.p);
  if (notify) c->notify(c->notify_arg);
  return rc;
}

// An fdatasync the log alone answers, in async mode (lock held, released): the frames before it are made durable
// first, then its marker is journaled (the file's times, which fdatasync does not promise), so that the marker does
// not dirty again the log page whose write-out capture_write began.
static int fdatasync_by_log(struct capture *c, const char *path, int fd) {
  struct buf b = { 0 };
  int notify = 0;
  uint64_t seq = 0;
  uint64_t target = c->appended;
  c->fast_acked = 1;
  pthread_mutex_unlock(&c->lock);
  int rc = log_durable(c, target);
  pthread_mutex_lock(&c->lock);
  int mrc = mark(c, &b, "fsync", path, fd, &notify, &seq);
  pthread_mutex_unlock(&c->lock);
  free(b.p);
  if (notify) c->notify(c->notify_arg);
  return rc != 0 ? rc : mrc;
}

int capture_fsync(struct capture *c, const char *path, int fd, int datasync, capture_marked_fn marked, void *arg) {
  struct buf b = { 0 };
  int notify = 0;
  uint64_t seq = 0;
  pthread_mutex_lock(&c->lock);
  if (datasync && c->fast && !marked) return fdatasync_by_log(c, path, fd);
  // Otherwise the marker is journaled first: in sync mode the backup's wait for it starts while the log is flushed.
  int rc = mark(c, &b, "fsync", path, fd, &notify, &seq);
  uint64_t target = c->appended;
  // fsync (not fdatasync) also promises the times, which a redo does not bring back: it flushes the file too.
  int fast = rc == 0 && datasync && c->fast;
  if (fast) c->fast_acked = 1;
  else __atomic_store_n(&c->want_checkpoint, 1, __ATOMIC_RELAXED);
  // Flushed here, the file's large writes so far give their pages back after it; else the next checkpoint does.
  struct written_span span = fast ? (struct written_span){ 0 } : take_due_span(c, fd);
  pthread_mutex_unlock(&c->lock);
  free(b.p);
  if (notify) c->notify(c->notify_arg);
  if (rc != 0) return rc;
  if (marked) marked(arg, seq);
  if (fast) return log_durable(c, target);
  // The file flushes on this thread while the syncer flushes the log: the device can merge the two.
  pthread_mutex_lock(&c->sync_lock);
  if (c->requested < target) {
    c->requested = target;
    pthread_cond_signal(&c->sync_req);
  }
  pthread_mutex_unlock(&c->sync_lock);
  int frc = datasync ? fdatasync(fd) : fsync(fd);
  int ferr = errno;
  if (frc == 0) span_drop(fd, &span);
  rc = log_durable(c, target);
  return frc != 0 ? -ferr : rc;
}

void capture_hold(struct capture *c, int on) {
  pthread_mutex_lock(&c->lock);
  c->held += on ? 1 : -1;
  if (c->held < 0) c->held = 0;
  if (!c->held) pthread_cond_broadcast(&c->taken);
  pthread_mutex_unlock(&c->lock);
}

uint64_t capture_reserve(struct capture *c) {
  pthread_mutex_lock(&c->lock);
  uint64_t seq = c->next_seq++;
  pthread_mutex_unlock(&c->lock);
  return seq;
}

int capture_unreserve(struct capture *c, uint64_t seq) {
  pthread_mutex_lock(&c->lock);
  int ok = c->next_seq == seq + 1;
  if (ok) c->next_seq = seq;
  pthread_mutex_unlock(&c->lock);
  return ok;
}

// syncfs of the mirrored tree (lock not held); then the pages of the large writes it made durable are given back.
static int sync_tree(struct capture *c) {
  struct handle_span taken[SPAN_SLOTS];
  int n = 0;
  pthread_mutex_lock(&c->lock);
  for (int i = 0; i < SPAN_SLOTS; i++) {
    if (c->spans[i].fd == -1 || !span_due(&c->spans[i].span)) continue;
    // A duplicate (a kept one is one already): the handle may be released meanwhile, and its number reused.
    taken[n] = c->spans[i];
    if (!c->spans[i].kept) taken[n].fd = fcntl(c->spans[i].fd, F_DUPFD_CLOEXEC, 0);
    if (taken[n].fd >= 0) n++;
    c->spans[i].fd = -1;
    c->spans[i].kept = 0;
  }
  pthread_mutex_unlock(&c->lock);
  int rc = syscall(SYS_syncfs, c->root_fd) == 0 ? 0 : -errno;
  for (int i = 0; i < n; i++) {
    if (rc == 0) span_drop(taken[i].fd, &taken[i].span);
    close(taken[i].fd);
  }
  return rc;
}

// Appends a checkpoint frame (lock held): everything before it reached the mirrored files' stable storage, or was
// never answered as durable. Its seq field: the next seq.
static int append_checkpoint(struct capture *c) {
  struct buf b = { 0 };
  frame_begin(&b);
  frame_end(&b, FRAME_CHECKPOINT, c->next_seq);
  int rc = b.p ? append(c, &b) : -ENOMEM;
  free(b.p);
  return rc;
}

int capture_log(struct capture *c, int kind, uint64_t seq, const void *body, size_t len) {
  struct buf b = { 0 };
  frame_begin(&b);
  put(&b, body, len);
  frame_end(&b, kind, seq);
  if (b.len != FRAME_HEADER + len) {
    free(b.p);
    return -ENOMEM;
  }
  pthread_mutex_lock(&c->lock);
  __atomic_store_n(&c->fast, 0, __ATOMIC_RELAXED);
  c->js_frames++;
  int rc = 0, checkpoint = c->fast_acked;
  if (checkpoint) {
    // Writes answered by the log alone come before this frame, whose operation may rename or replace their files:
    // they reach their files (and a checkpoint frame the log) before it runs. fdatasyncs meanwhile flush their files.
    c->fast_acked = 0;
    pthread_mutex_unlock(&c->lock);
    rc = sync_tree(c);
    pthread_mutex_lock(&c->lock);
    if (rc == 0) rc = append_checkpoint(c);
    if (rc != 0) c->fast_acked = 1; // still owed: the next frame of JavaScript's tries again
  }
  if (rc == 0) rc = append(c, &b);
  uint64_t target = c->appended;
  pthread_mutex_unlock(&c->lock);
  free(b.p);
  if (rc == 0 && checkpoint) rc = log_durable(c, target);
  return rc;
}

// ---- namespace changes served here ----

static const char *const NAMES_OPS[] = { "rename", "unlink", "rmdir", "create", "mkdir", "symlink", "link" };

// One change as its entry says it: a rename's or link's new name, a symlink's target, a create's or mkdir's mode,
// and for a new name of its own (create, mkdir, symlink) its owner (-1: the intent's "leave it").
struct names_change {
  enum names_op op;
  const char *path, *to, *target;
  int mode; // -1: none
  int owned;
  int64_t uid, gid;
};

// `p`'s parent, as a mount path ("/" for a name at the top).
static void parent_of(char *out, size_t size, const char *p) {
  const char *slash = strrchr(p, '/');
  size_t n = slash && slash != p ? (size_t)(slash - p) : 1;
  if (n >= size) n = size - 1;
  memcpy(out, p, n);
  out[n] = 0;
}

static void mp_id(struct buf *b, int64_t id) {
  if (id < 0) put_u8(b, 0xff); // -1
  else mp_uint(b, (uint64_t)id);
}

// A change's entry: its intent (`final` 0), or its final form, done, with the times of the `n` paths it changed.
static void names_frame(struct buf *b, const struct names_change *ch, uint64_t seq, int final, int n,
                        const char *const *stamped, const struct stat *st) {
  int pairs = 4 + (ch->to != NULL) + (ch->target != NULL) + (ch->mode >= 0) + 2 * ch->owned + (n > 0) + final;
  entry_head(b, pairs, NAMES_OPS[ch->op], ch->path);
  if (ch->to) {
    mp_key(b, "to");
    mp_key(b, ch->to);
  }
  if (ch->target) {
    mp_key(b, "target");
    mp_key(b, ch->target);
  }
  if (ch->mode >= 0) {
    mp_key(b, "mode");
    mp_uint(b, (uint64_t)ch->mode);
  }
  if (ch->owned) {
    mp_key(b, "uid");
    mp_id(b, ch->uid);
    mp_key(b, "gid");
    mp_id(b, ch->gid);
  }
  if (n > 0) {
    mp_key(b, "stamps");
    put_u8(b, (uint8_t)(0x90 | n));
    for (int i = 0; i < n; i++) mp_stamp(b, stamped[i], &st[i]);
  }
  entry_tail(b, seq, final);
  frame_end(b, FRAME_ENTRY, seq);
}

void capture_serve_names(struct capture *c, int on, int create_mode) {
  // Under the lock: once this returns, no change JavaScript has just forbidden is still running here.
  pthread_mutex_lock(&c->lock);
  c->names = on;
  c->create_mode = on ? create_mode : H_JS;
  pthread_mutex_unlock(&c->lock);
}

uint64_t capture_names_changed(struct capture *c) {
  return __atomic_load_n(&c->names_changed, __ATOMIC_ACQUIRE);
}

// A change is journaled as JavaScript journals its own: the intent frame, the change, the final frame; all under the
// lock (names_begin to names_end or names_fail), so that the seq order is the order on disk. The kernel holds the
// parents' locks throughout, so no other change of these names runs meanwhile.
static int names_begin(struct capture *c, struct buf *b, const struct names_change *ch) {
  pthread_mutex_lock(&c->lock);
  while (must_wait(c)) pthread_cond_wait(&c->taken, &c->lock);
  // Writes answered by the log alone must reach their files before names change (a syncfs, see capture_log):
  // JavaScript's path does that, not this thread under the lock.
  if (!c->names || (ch->op == NAMES_CREATE && c->create_mode == H_JS) || c->fast_acked || c->stop) {
    pthread_mutex_unlock(&c->lock);
    return -EAGAIN;
  }
  names_frame(b, ch, c->next_seq, 0, 0, NULL, NULL);
  if (!b->p || append(c, b) != 0) {
    // The log cannot take it (a full disk): JavaScript journals it or refuses it, and says so.
    pthread_mutex_unlock(&c->lock);
    free(b->p);
    return -EAGAIN;
  }
  return 0;
}

// The change failed (`e`: errno, EAGAIN for JavaScript to serve it): it never happened, its intent goes.
static int names_fail(struct capture *c, struct buf *b, int e) {
  cut(c, c->log_size - (off_t)b->len);
  pthread_mutex_unlock(&c->lock);
  free(b->p);
  return -e;
}

// `own`: the new name's stat, taken already (NULL: none).
static void names_end(struct capture *c, struct buf *b, const struct names_change *ch, const struct stat *own) {
  uint64_t seq = c->next_seq++;
  c->js_frames++;
  __atomic_store_n(&c->fast, 0, __ATOMIC_RELAXED); // a redo of captured writes alone would now miss this change
  __atomic_store_n(&c->names_changed, c->names_changed + 1, __ATOMIC_RELEASE);
  // The times it left, as JavaScript stamps its own: the parents' whose entries changed, a new name's, a renamed
  // file's (its ctime is not journaled; a link changes only that).
  char parents[2][PATH_MAX];
  const char *paths[3];
  int n = 0;
  if (ch->op != NAMES_LINK) {
    parent_of(parents[0], PATH_MAX, ch->path);
    paths[n++] = parents[0];
  }
  if (ch->owned) paths[n++] = ch->path;
  if (ch->to) {
    parent_of(parents[1], PATH_MAX, ch->to);
    paths[n++] = parents[1];
    if (ch->op == NAMES_RENAME) paths[n++] = ch->to;
  }
  const char *stamped[3];
  struct stat st[3];
  int k = 0;
  for (int i = 0; i < n; i++) {
    int seen = 0;
    for (int j = 0; j < i; j++) seen |= strcmp(paths[i], paths[j]) == 0;
    if (seen) continue;
    if (own && paths[i] == ch->path) st[k] = *own;
    else if (fstatat(c->root_fd, rel(paths[i]), &st[k], AT_SYMLINK_NOFOLLOW) != 0) continue;
    stamped[k++] = paths[i];
  }
  names_frame(b, ch, seq, 1, k, stamped, st);
  // If the final frame cannot be logged, JavaScript takes the intent (every seq must reach it); recovery after a
  // crash redoes it, as it does JavaScript's unfinished entries.
  if (append(c, b) != 0) {
    struct names_change intent = *ch;
    if (ch->owned) intent.uid = intent.gid = -1;
    names_frame(b, &intent, seq, 0, 0, NULL, NULL);
  }
  int notify = hand_over(c, b);
  pthread_mutex_unlock(&c->lock);
  free(b->p);
  if (notify) c->notify(c->notify_arg);
}

int capture_names(struct capture *c, enum names_op op, const char *path, const char *other, mode_t mode) {
  struct buf b = { 0 };
  if (op == NAMES_CREATE) return -EINVAL; // capture_create
  struct names_change ch = { .op = op, .path = path, .mode = -1, .uid = -1, .gid = -1 };
  if (op == NAMES_RENAME || op == NAMES_LINK) ch.to = other;
  if (op == NAMES_SYMLINK) ch.target = other;
  if (op == NAMES_MKDIR) ch.mode = (int)(mode & 07777);
  ch.owned = op == NAMES_MKDIR || op == NAMES_SYMLINK;
  int rc = names_begin(c, &b, &ch);
  if (rc != 0) return rc;
  int root = c->root_fd;
  switch (op) {
    case NAMES_RENAME: rc = renameat(root, rel(path), root, rel(other)); break;
    case NAMES_UNLINK: rc = unlinkat(root, rel(path), 0); break;
    case NAMES_RMDIR: rc = unlinkat(root, rel(path), AT_REMOVEDIR); break;
    case NAMES_MKDIR: rc = mkdirat(root, rel(path), mode); break;
    case NAMES_SYMLINK: rc = symlinkat(other, root, rel(path)); break;
    default: rc = linkat(root, rel(path), root, rel(other), 0); break;
  }
  if (rc != 0) return names_fail(c, &b, errno);
  struct stat st;
  int stat_ok = ch.owned && fstatat(root, rel(path), &st, AT_SYMLINK_NOFOLLOW) == 0;
  if (stat_ok) {
    if (ch.mode >= 0) ch.mode = (int)(st.st_mode & 07777);
    ch.uid = st.st_uid;
    ch.gid = st.st_gid;
  }
  names_end(c, &b, &ch, stat_ok ? &st : NULL);
  return 0;
}

int capture_create(struct capture *c, const char *path, mode_t mode) {
  struct buf b = { 0 };
  struct names_change ch = { .op = NAMES_CREATE, .path = path, .mode = (int)(mode & 07777), .owned = 1, .uid = -1, .gid = -1 };
  int rc = names_begin(c, &b, &ch);
  if (rc != 0) return rc;
  int fd = openat(c->root_fd, rel(path), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, mode);
  // EEXIST: a program made the name beneath the mount; JavaScript opens it as ext4 would (see its create).
  if (fd < 0) return names_fail(c, &b, errno == EEXIST ? EAGAIN : errno);
  struct stat st;
  int stat_ok = fstat(fd, &st) == 0;
  if (stat_ok) {
    ch.mode = (int)(st.st_mode & 07777);
    ch.uid = st.st_uid;
    ch.gid = st.st_gid;
  }
  // Its writes are captured from the first; a handle past the table is JavaScript's.
  if ((uint64_t)fd < c->handles) {
    __atomic_store_n(&c->mode[fd], (uint8_t)c->create_mode, __ATOMIC_RELEASE);
    c->dirty[fd] = 0;
    forget_span(c, fd);
    __atomic_store_n(&c->created[fd], 1, __ATOMIC_RELEASE);
  }
  names_end(c, &b, &ch, stat_ok ? &st : NULL);
  return fd;
}

int capture_checkpoint(struct capture *c) {
  pthread_mutex_lock(&c->lock);
  uint64_t js = c->js_frames;
  __atomic_store_n(&c->fast, 0, __ATOMIC_RELAXED); // fdatasyncs flush their files while the tree is synced: the checkpoint covers them
  __atomic_store_n(&c->want_checkpoint, 0, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&c->lock);
  int rc = sync_tree(c);
  pthread_mutex_lock(&c->lock);
  if (rc == 0 && c->js_frames == js && (rc = append_checkpoint(c)) == 0) {
    __atomic_store_n(&c->fast, 1, __ATOMIC_RELAXED);
    c->fast_acked = 0;
  }
  pthread_mutex_unlock(&c->lock);
  return rc;
}

int capture_sync_tree(struct capture *c) {
  return sync_tree(c);
}

int capture_wants_checkpoint(struct capture *c) {
  // Read without the lock, which writers hold through whole pwrites: JavaScript asks after every ingest, and a flag
  // set before a frame was handed over is seen by the ingest that frame's notification starts.
  return __atomic_load_n(&c->want_checkpoint, __ATOMIC_RELAXED) && !__atomic_load_n(&c->fast, __ATOMIC_RELAXED);
}

struct capture_part *capture_take(struct capture *c, size_t *n) {
  pthread_mutex_lock(&c->pending_lock);
  if (c->pending_len && !parts_room(c, 1)) {
    pthread_mutex_unlock(&c->pending_lock);
    *n = 0;
    return NULL; // no memory now: the next take has them
  }
  close_pending(c);
  struct capture_part *parts = c->parts;
  *n = c->parts_n;
  size_t waited = c->waiting;
  c->parts = NULL;
  c->parts_n = c->parts_cap = 0;
  __atomic_store_n(&c->waiting, 0, __ATOMIC_RELAXED);
  c->notify_queued = 0;
  pthread_mutex_unlock(&c->pending_lock);
  if (waited > PENDING_MAX) {
    // Writers may wait for room: they test it under the lock, so taking it here loses no wake-up.
    pthread_mutex_lock(&c->lock);
    pthread_cond_broadcast(&c->taken);
    pthread_mutex_unlock(&c->lock);
  }
  return parts;
}

// Switches to the other log once every frame in this one is on stable storage; the other one's frames are
// already in the journal (JavaScript rotates only after flushing it), so it starts over at a new generation,
// overwriting the file from its start. Only JavaScript rotates, one rotation at a time (on libuv's pool), and
// nothing appends to the other log until the switch: it is made ready (cut back, its generation frame written and
// flushed) and this log flushed without capture's lock, which the writers take; under it, only the frames appended
// meanwhile are flushed. A log cut back from 200 MiB held the lock for up to 80 ms in `ftruncate` (strace, buffered
// 4 KiB writes).
int capture_rotate(struct capture *c) {
  pthread_mutex_lock(&c->lock);
  int next = 1 - c->active, fd = c->log_fds[next], current = c->log_fds[c->active];
  uint64_t generation = c->generation + 1;
  off_t next_end = c->file_end[next];
  pthread_mutex_unlock(&c->lock);
  uint64_t salt = 0;
  int rc = 0;
  if (getrandom(&salt, sizeof salt, 0) != sizeof salt) rc = -errno;
  // A log that frames grew past LOG_KEEP before its rotation gives the rest back.
  else if (next_end > LOG_KEEP && ftruncate(fd, LOG_KEEP) != 0) rc = -errno;
  else if (next_end > LOG_KEEP) next_end = LOG_KEEP;
  if (rc == 0) {
    struct buf b = { 0 };
    frame_begin(&b);
    put(&b, &salt, sizeof salt);
    frame_end(&b, FRAME_GENERATION, generation);
    seal(&b, generation);
    rc = b.len == GENERATION_FRAME ? pwrite_all(fd, b.p, b.len, 0) : -ENOMEM;
    free(b.p);
    if (rc == 0 && fdatasync(fd) != 0) rc = -errno;
  }
  if (rc == 0 && fdatasync(current) != 0) rc = -errno;
  if (rc != 0) return rc;
  pthread_mutex_lock(&c->lock);
  if (fdatasync(current) != 0) rc = -errno;
  if (rc == 0) {
    uint64_t appended = __atomic_load_n(&c->appended, __ATOMIC_ACQUIRE);
    pthread_mutex_lock(&c->sync_lock);
    if (appended > c->written) c->written = appended;
    if (appended > c->synced) c->synced = appended;
    wake_waiters(c, 0);
    pthread_mutex_unlock(&c->sync_lock);
    c->generation = generation;
    c->key = generation ^ salt;
    __atomic_store_n(&c->log_size, (off_t)GENERATION_FRAME, __ATOMIC_RELAXED);
    c->file_end[next] = next_end < GENERATION_FRAME ? GENERATION_FRAME : next_end;
    c->ready[next] = c->file_end[next]; // flushed above, whole
    __atomic_store_n(&c->active, next, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&c->lock);
  return rc;
}

// Without the lock: JavaScript asks after every take of captured entries, and 8 writers contend for it.
uint64_t capture_log_bytes(struct capture *c) {
  return (uint64_t)__atomic_load_n(&c->log_size, __ATOMIC_RELAXED);
}
