// FUSE over io_uring: one io_uring and one ring entry per thread, threads pinned to the CPU whose queue they
// register on. A thread blocks while it serves (an fsync, a call into JavaScript), so each CPU has several.
// The kernel's ABI (fuse.h of Linux 6.14, protocol 7.42) is spelled out here: Debian's headers predate it.
#include "uring.h"

#include <ctype.h>
#include <errno.h>
#include <linux/fuse.h>
#include <linux/io_uring.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

enum { CMD_REGISTER = 1, CMD_COMMIT_AND_FETCH = 2 };

struct ent_in_out {
  uint64_t flags;
  uint64_t commit_id;
  uint32_t payload_sz;
  uint32_t padding;
  uint64_t reserved;
};

// An entry's header buffer; its payload buffer follows it directly (see serve_entry).
struct req_header {
  char in_out[128]; // fuse_in_header on fetch, fuse_out_header on commit
  char op_in[128];  // the request's first argument (the op's header)
  struct ent_in_out ent;
};

struct cmd_req {
  uint64_t flags;
  uint64_t commit_id;
  uint16_t qid;
  uint8_t padding[6];
};

struct entry {
  struct uring *u;
  pthread_t thread;
  int cpu;
  int ring_fd;
  // The rings, mapped from ring_fd.
  void *sq_map, *cq_map; size_t sq_size, cq_size;
  struct io_uring_sqe *sqes; size_t sqes_size;
  unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
  struct io_uring_cqe *cqes;
  // header + payload, one allocation.
  struct req_header *header;
  char *payload;
  struct iovec iov[2];
  uint64_t unique;
  int replied;
};

struct uring {
  int fd;
  size_t payload_size;
  uring_serve_fn serve;
  void *ctx;
  int count;
  int ready;
  struct entry entries[];
};

// The entry whose request this thread is serving.
static __thread struct entry *serving;

static int ring_setup(struct entry *e) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_SQE128;
  e->ring_fd = (int)syscall(__NR_io_uring_setup, 2, &p);
  if (e->ring_fd < 0) return -errno;
  e->sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  e->cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  if (p.features & IORING_FEAT_SINGLE_MMAP) e->sq_size = e->cq_size = e->sq_size > e->cq_size ? e->sq_size : e->cq_size;
  e->sq_map = mmap(NULL, e->sq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, e->ring_fd, IORING_OFF_SQ_RING);
  if (e->sq_map == MAP_FAILED) return -errno;
  e->cq_map = (p.features & IORING_FEAT_SINGLE_MMAP) ? e->sq_map
    : mmap(NULL, e->cq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, e->ring_fd, IORING_OFF_CQ_RING);
  if (e->cq_map == MAP_FAILED) return -errno;
  e->sqes_size = p.sq_entries * 2 * sizeof(struct io_uring_sqe); // SQE128: two slots each
  e->sqes = mmap(NULL, e->sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, e->ring_fd, IORING_OFF_SQES);
  if (e->sqes == MAP_FAILED) return -errno;
  char *sq = e->sq_map, *cq = e->cq_map;
  e->sq_tail = (unsigned *)(sq + p.sq_off.tail);
  e->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
  e->sq_array = (unsigned *)(sq + p.sq_off.array);
  e->cq_head = (unsigned *)(cq + p.cq_off.head);
  e->cq_tail = (unsigned *)(cq + p.cq_off.tail);
  e->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
  e->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
  return 0;
}

static void ring_close(struct entry *e) {
  if (e->sqes && e->sqes != MAP_FAILED) munmap(e->sqes, e->sqes_size);
  if (e->cq_map && e->cq_map != MAP_FAILED && e->cq_map != e->sq_map) munmap(e->cq_map, e->cq_size);
  if (e->sq_map && e->sq_map != MAP_FAILED) munmap(e->sq_map, e->sq_size);
  if (e->ring_fd >= 0) close(e->ring_fd);
}

// Queues the entry's command (register, or commit the reply and fetch the next request) and waits for its
// completion: 0 when a request is in the entry, else -errno.
static int ring_command(struct entry *e, uint32_t op, uint64_t commit_id) {
  unsigned tail = *e->sq_tail, idx = tail & *e->sq_mask;
  struct io_uring_sqe *sqe = &e->sqes[idx * 2];
  memset(sqe, 0, 2 * sizeof *sqe);
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = e->u->fd;
  sqe->cmd_op = op;
  if (op == CMD_REGISTER) {
    sqe->addr = (uint64_t)(uintptr_t)e->iov;
    sqe->len = 2;
  }
  struct cmd_req *c = (struct cmd_req *)sqe->cmd;
  c->commit_id = commit_id;
  c->qid = (uint16_t)e->cpu;
  e->sq_array[idx] = idx;
  __atomic_store_n(e->sq_tail, tail + 1, __ATOMIC_RELEASE);
  unsigned to_submit = 1;
  for (;;) {
    unsigned head = *e->cq_head;
    if (head != __atomic_load_n(e->cq_tail, __ATOMIC_ACQUIRE)) {
      int res = e->cqes[head & *e->cq_mask].res;
      __atomic_store_n(e->cq_head, head + 1, __ATOMIC_RELEASE);
      return res;
    }
    long n = syscall(__NR_io_uring_enter, e->ring_fd, to_submit, 1, IORING_ENTER_GETEVENTS, NULL, 0);
    // Retried, not given up: a registered entry whose thread has gone would take a request no one serves.
    if (n < 0 && errno != EINTR && errno != EAGAIN && errno != EBUSY) return -errno;
    if (n < 0 && errno != EINTR) usleep(100);
    if (n > 0) to_submit = 0;
  }
}

// Lays the request out as /dev/fuse gives it (in header, op header, payload) just before the payload, which
// follows the header buffer, and serves it; an unanswered request is answered EIO.
static void serve_entry(struct entry *e) {
  struct fuse_in_header in;
  memcpy(&in, e->header->in_out, sizeof in);
  size_t payload = e->header->ent.payload_sz;
  size_t op = in.len >= sizeof in + payload ? in.len - sizeof in - payload : SIZE_MAX;
  e->unique = in.unique;
  e->replied = 0;
  if (op <= sizeof e->header->op_in && payload <= e->u->payload_size) {
    memmove(e->payload - op, e->header->op_in, op);
    char *start = e->payload - op - sizeof in;
    memcpy(start, &in, sizeof in);
    serving = e;
    e->u->serve(e->u->ctx, start, in.len);
    serving = NULL;
  }
  if (!e->replied) {
    struct fuse_out_header out = { .len = sizeof out, .error = -EIO, .unique = in.unique };
    struct iovec iov = { &out, sizeof out };
    serving = e;
    uring_reply(&iov, 1);
    serving = NULL;
  }
}

ssize_t uring_reply(const struct iovec *iov, int count) {
  struct entry *e = serving;
  if (!e || count < 1 || iov[0].iov_len < sizeof(struct fuse_out_header)) return -1;
  struct fuse_out_header out;
  memcpy(&out, iov[0].iov_base, sizeof out);
  if (out.unique != e->unique) return -1;
  size_t n = 0;
  for (int i = 1; i < count; i++) {
    if (n + iov[i].iov_len > e->u->payload_size) {
      out.error = -EIO;
      n = 0;
      break;
    }
    memmove(e->payload + n, iov[i].iov_base, iov[i].iov_len);
    n += iov[i].iov_len;
  }
  out.len = (uint32_t)(sizeof out + n);
  memcpy(e->header->in_out, &out, sizeof out);
  memset(&e->header->ent, 0, sizeof e->header->ent);
  e->header->ent.payload_sz = (uint32_t)n;
  e->replied = 1;
  return (ssize_t)out.len;
}

static void *entry_main(void *arg) {
  struct entry *e = arg;
  struct uring *u = e->u;
  pthread_setname_np(pthread_self(), "drms-uring"); // names the threads in top -H and the benchmark's CPU split
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  CPU_SET(e->cpu, &cpus);
  sched_setaffinity(0, sizeof cpus, &cpus);

  int res = ring_setup(e);
  // Until the kernel has taken the INIT reply it answers EAGAIN.
  for (int tries = 0; res == 0; tries++) {
    res = ring_command(e, CMD_REGISTER, 0);
    if (res != -EAGAIN || tries == 1000) break;
    usleep(1000);
  }
  if (res == 0) __atomic_add_fetch(&u->ready, 1, __ATOMIC_RELAXED);
  while (res == 0) {
    serve_entry(e);
    uint64_t commit_id = e->unique;
    do res = ring_command(e, CMD_COMMIT_AND_FETCH, commit_id); while (res == -EINTR);
  }
  // -ENOTCONN: the connection ended. Anything else: the kernel serves through /dev/fuse.
  ring_close(e);
  return NULL;
}

int uring_cpus(void) {
  // "0-N" or a list of ranges: the highest CPU number plus one, as the kernel's num_possible_cpus().
  FILE *f = fopen("/sys/devices/system/cpu/possible", "r");
  char line[256];
  int cpus = 0;
  if (f && fgets(line, sizeof line, f)) {
    for (char *p = line; *p; p++) if ((p == line || !isdigit((unsigned char)p[-1])) && isdigit((unsigned char)*p)) {
      int n = atoi(p) + 1;
      if (n > cpus) cpus = n;
    }
  }
  if (f) fclose(f);
  return cpus > 0 ? cpus : get_nprocs_conf();
}

struct uring *uring_start(int fd, size_t payload_size, int per_cpu, uring_serve_fn serve, void *ctx) {
  int cpus = uring_cpus();
  if (cpus < 1 || per_cpu < 1) return NULL;
  struct uring *u = calloc(1, sizeof *u + (size_t)(cpus * per_cpu) * sizeof(struct entry));
  if (!u) return NULL;
  u->fd = fd;
  u->payload_size = payload_size;
  u->serve = serve;
  u->ctx = ctx;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  for (int i = 0; i < cpus * per_cpu; i++) {
    struct entry *e = &u->entries[i];
    e->u = u;
    e->cpu = i % cpus;
    e->ring_fd = -1;
    void *buf = NULL;
    if (posix_memalign(&buf, page, sizeof(struct req_header) + payload_size) != 0) break;
    e->header = buf;
    e->payload = (char *)buf + sizeof(struct req_header);
    e->iov[0] = (struct iovec){ e->header, sizeof(struct req_header) };
    e->iov[1] = (struct iovec){ e->payload, payload_size };
    if (pthread_create(&e->thread, NULL, entry_main, e) != 0) {
      free(buf);
      e->header = NULL;
      break;
    }
    u->count++;
  }
  if (u->count == 0) {
    free(u);
    return NULL;
  }
  return u;
}

int uring_ready(const struct uring *u) { return __atomic_load_n(&u->ready, __ATOMIC_RELAXED); }

void uring_stop(struct uring *u, void (*abort_connection)(void *), void *arg) {
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 2;
  int aborted = 0;
  for (int i = 0; i < u->count; i++) {
    struct entry *e = &u->entries[i];
    if (aborted || pthread_timedjoin_np(e->thread, NULL, &deadline) != 0) {
      if (!aborted) abort_connection(arg);
      aborted = 1;
      pthread_join(e->thread, NULL);
    }
    free(e->header);
    e->header = NULL;
  }
}

void uring_free(struct uring *u) { free(u); }
