// FUSE over io_uring (Linux 6.14+): the kernel queues a request on the queue of the CPU its task runs on, and
// that queue's threads, pinned to the CPU, serve it there: no wake-up of another core per request.
#ifndef DRMS_URING_H
#define DRMS_URING_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

// In the INIT request's and reply's flags2 (FUSE_OVER_IO_URING, 1 << 41 of the flags).
#define URING_INIT_FLAG2 (1u << 9)

struct uring;

// Serves one request laid out as read from /dev/fuse (header, op arguments, payload).
typedef void (*uring_serve_fn)(void *ctx, void *request, size_t size);

// Starts threads that register ring entries on the connection of /dev/fuse `fd` (after its INIT reply), each
// with a payload buffer of `payload_size` bytes, `per_cpu` entries for each possible CPU. NULL if none started.
struct uring *uring_start(int fd, size_t payload_size, int per_cpu, uring_serve_fn serve, void *ctx);

// The kernel's queues: one per possible CPU.
int uring_cpus(void);

// Ring entries that took requests (0: the kernel serves the connection through /dev/fuse).
int uring_ready(const struct uring *u);

// Waits for the threads, which end when the connection does; `abort_connection` is called if they are not gone
// within two seconds. uring_ready still answers until uring_free.
void uring_stop(struct uring *u, void (*abort_connection)(void *), void *arg);
void uring_free(struct uring *u);

// The reply to the request this thread serves from a ring goes into its entry: returns its length, or -1 if this
// reply is not for a ring (it goes to /dev/fuse).
ssize_t uring_reply(const struct iovec *iov, int count);

#endif
