// Giving back the page cache a mirrored file's large writes filled, once those pages are on disk (see pages.c).
#ifndef DRMS_PAGES_H
#define DRMS_PAGES_H

#include <stdint.h>
#include <sys/types.h>

// The range of a file that large writes covered since its pages were last given back, and how many bytes they wrote.
struct written_span {
  off_t lo, hi;
  uint64_t bytes;
};

// The primary notes only writes this large: smaller ones leave partial pages in the mount's cache, whose reads then
// come from the file's own pages, which stay cached.
#define SPAN_MIN_WRITE (64 << 10)

// Adds a write to the span.
void span_note(struct written_span *s, off_t off, size_t size);
// Whether the span's writes add up to 1 MiB: smaller ones gather across flushes first.
int span_due(const struct written_span *s);
// For a due span: drops its clean cached pages if it is dense, but a last page written in part, and empties it. Call
// it once the span's writes are on disk: dirty pages are not dropped (the kernel starts writing them out instead).
void span_drop(int fd, struct written_span *s);

#endif
