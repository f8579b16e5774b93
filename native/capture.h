// Capture: the journal append of writes to mirrored files and of namespace changes, made on libfuse's threads (see
// capture.c).
#ifndef DRMS_CAPTURE_H
#define DRMS_CAPTURE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

// How a file handle's writes are served: in JavaScript (the default), captured here, or passed through unjournaled;
// H_SYNC: captured here, and its fsync and close then wait in JavaScript until the backup has applied them (sync mode).
enum handle_mode { H_JS = 0, H_CAPTURE = 1, H_PLAIN = 2, H_SYNC = 3 };
static inline int captured(int mode) { return mode == H_CAPTURE || mode == H_SYNC; }

// A mount path ("/a/b") as a path relative to the mirrored tree's descriptor, for the *at() calls ("." for the root).
static inline const char *rel(const char *path) { return path[1] ? path + 1 : "."; }

// Capture log frames: [u32 body length][u8 kind][u64 seq][u32 crc32][body], little-endian header, msgpack body.
// The crc32 (zlib's) covers the log's key (u64), the header before it, and the body. A log starts with its
// generation frame (sealed with the generation itself), whose body is a random u64 salt: the key of its other
// frames is generation ^ salt, so what an older generation left behind in the file never reads as a frame.
enum frame_kind {
  FRAME_ENTRY = 0,    // an entry journaled by JavaScript (begun, final form, or complete with `done`)
  FRAME_DONE = 1,     // JavaScript's operation for that seq completed (no body)
  FRAME_CAPTURED = 2, // an entry captured here; a write's data reached the file unless it is the log's last frame
  FRAME_GENERATION = 3, // a log's first frame: its generation in the seq field (recovery reads the older log first)
  FRAME_CHECKPOINT = 4, // the mirrored tree was synced: captured writes before it need no redo after a power cut
};
#define FRAME_CRC_AT 13
#define FRAME_HEADER 17
#define GENERATION_FRAME (FRAME_HEADER + 8)

struct capture;

// The logs as the journal starts them: the active one holds its generation frame alone, sealing with `key`.
// `flush_fd`: a file never written, whose fdatasync flushes the disk's cache (see flush_overwritten).
struct capture *capture_new(int root_fd, const int log_fds[2], int active, uint64_t generation, uint64_t key, int flush_fd, uint64_t next_seq, void (*notify)(void *), void *notify_arg);
void capture_free(struct capture *c);

int capture_mode(struct capture *c, uint64_t fh);
void capture_set_mode(struct capture *c, uint64_t fh, int mode);
// The handle is released (before its descriptor closes): back to JavaScript's mode. Its written span is kept, on a
// duplicate of the descriptor, where only the tree's next sync would give its pages back.
void capture_release_handle(struct capture *c, uint64_t fh);
// Every handle back to JavaScript (read-only mount, policy change, backlog cap).
void capture_reset_modes(struct capture *c);
// JavaScript keeps state for the handle (it opened it, or took over one created here): its release goes there.
void capture_js_handle(struct capture *c, uint64_t fh);
// Whether JavaScript keeps state for the handle: true unless capture_create opened it and JavaScript never took it over.
int capture_js_owns(struct capture *c, uint64_t fh);

// Holds captured writes back (nested: counted) while JavaScript needs every mutation to wait.
void capture_hold(struct capture *c, int on);

// Bytes written, -errno, or -EAGAIN: not captured (the handle went back to JavaScript, or the log is full), serve
// it in JavaScript.
int capture_write(struct capture *c, const char *path, int fd, const char *buf, size_t size, off_t off);
// `marked` (if given) is called with the seq of the entry they journal, once it is in the log and before the log is
// flushed; not called when there is none (a flush of a file not written since).
typedef void (*capture_marked_fn)(void *arg, uint64_t seq);
int capture_flush(struct capture *c, const char *path, int fd, capture_marked_fn marked, void *arg);
int capture_fsync(struct capture *c, const char *path, int fd, int datasync, capture_marked_fn marked, void *arg);
// Sets a captured handle's times (UTIME_NOW and UTIME_OMIT resolved) and journals them: the writeback cache flushes
// a written file's mtime so. 0, -errno, or -EAGAIN: the handle is not captured, or the log cannot take the entry.
int capture_times(struct capture *c, const char *path, int fd, const struct timespec tv[2]);

// Namespace changes served here (names_op): journaled like JavaScript's own (an intent frame before the change runs,
// the final one with the times it left after), while JavaScript lets them (capture_serve_names: nothing of its
// policy, transactions or caps can refuse or redirect them).
enum names_op { NAMES_RENAME, NAMES_UNLINK, NAMES_RMDIR, NAMES_CREATE, NAMES_MKDIR, NAMES_SYMLINK, NAMES_LINK };
// `create_mode`: the handle mode files created here get; H_JS: creates are JavaScript's (a class may declare a VOS
// organization at creation, or have a mode of its own).
void capture_serve_names(struct capture *c, int on, int create_mode);
// Any but a create (capture_create). `other`: a rename's or link's new name, a symlink's target; `mode`: mkdir's.
// 0, -errno, or -EAGAIN: not served here, serve it in JavaScript.
int capture_names(struct capture *c, enum names_op op, const char *path, const char *other, mode_t mode);
// The new file's descriptor, -errno, or -EAGAIN (as capture_names).
int capture_create(struct capture *c, const char *path, mode_t mode);
// How many namespace changes were served here: JavaScript's caches by path are stale when it moved.
uint64_t capture_names_changed(struct capture *c);

uint64_t capture_reserve(struct capture *c);
// Gives `seq` back if nothing took a later one (its entry could not be journaled); returns whether it did.
int capture_unreserve(struct capture *c, uint64_t seq);
int capture_log(struct capture *c, int kind, uint64_t seq, const void *body, size_t len);
// A buffer of whole frames, in seq order with the others of a take.
struct capture_part { char *p; size_t len; };
// The frames since the last take, in `*n` parts (NULL if none); the caller frees the array and gives each part's
// buffer back with capture_release_taken.
struct capture_part *capture_take(struct capture *c, size_t *n);
void capture_release_taken(char *p);
// 0 or -errno. Blocks on the disk: JavaScript calls it on libuv's pool.
int capture_rotate(struct capture *c);
// Around JavaScript's calls that run on libuv's pool: capture_free waits until none is running.
void capture_work_begin(struct capture *c);
void capture_work_end(struct capture *c);
// Bytes of frames in the active log (JavaScript rotates past 64 MiB).
uint64_t capture_log_bytes(struct capture *c);
// Syncs the mirrored tree and, if JavaScript appended no frame meanwhile, appends a checkpoint frame and lets
// fdatasyncs flush only the log again. JavaScript calls it with no operation of its own in flight.
int capture_checkpoint(struct capture *c);
// Syncs the mirrored tree only: for a session whose logs the journal may have closed already (at unmount).
int capture_sync_tree(struct capture *c);
// An fdatasync flushed its file because JavaScript's frames followed the last checkpoint.
int capture_wants_checkpoint(struct capture *c);

#endif
