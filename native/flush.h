// Flushing a file whose writes only overwrite blocks already on stable storage (the capture logs, the backup's
// redo log) without committing anything in the filesystem's journal (see flush.c).
#ifndef DRMS_FLUSH_H
#define DRMS_FLUSH_H

// Whether flush_overwritten is sound for `fd`'s filesystem.
int overwrite_flushable(int fd);
// 0, or -1 with errno: `fd`'s dirty pages written out, then the disk's cache flushed through `flush_fd`, a file
// that is never written.
int flush_overwritten(int fd, int flush_fd);
// 0, or -1 with errno: `fd`'s dirty pages written out (the first half of flush_overwritten; a flush of the disk's
// cache through the flush file after it makes them durable).
int write_out(int fd);
// The file to pass as flush_fd: `name` in the directory `dir_name` of `dir_fd` (made if missing, away from the
// parent's inodes); an fd, or -1 with errno.
int flush_file_open(int dir_fd, const char *dir_name, const char *name);

#endif
