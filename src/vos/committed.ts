// A file held by an open transaction as the transaction found it, read from the file and its before-images:
// what copies and verify see of it, since that is what the backup has until the commit.
import fs from 'node:fs';
import type { Timestamp } from '../journal/entry.js';

/** The bytes a change overwrote, and the file's size before it. */
export interface BeforeImage {
  path: string;
  offset: number;
  data: Uint8Array;
  size: number;
}

/**
 * A file held by an open transaction as the transaction found it: what the backup has until the commit, and what
 * an abort restores. Copies and verify read it through readCommitted, never the uncommitted bytes.
 */
export interface CommittedView {
  size: number;
  /** The file's times when it joined the transaction. */
  atime: Timestamp;
  mtime: Timestamp;
  /** The transaction's before-images of this file, newest first. */
  images: BeforeImage[];
}

/** The committed view of a path in an open transaction (undefined for any other path). */
export type Committed = (rel: string) => CommittedView | undefined;

/**
 * Reads up to buf.length bytes of the committed file at `offset` from `fd` (the file as it is now): a byte a
 * change overwrote is in the oldest before-image covering it (the first change saved it), any other byte is
 * unchanged. Returns the bytes read, 0 at the committed end.
 */
export function readCommitted(fd: number, view: CommittedView, buf: Buffer, offset: number): number {
  const n = Math.max(0, Math.min(buf.length, view.size - offset));
  const got = n ? fs.readSync(fd, buf, 0, n, offset) : 0;
  buf.fill(0, got, n); // cut by the transaction's truncate: its before-image below holds these bytes
  for (const img of view.images) {
    const from = Math.max(offset, img.offset);
    const to = Math.min(offset + n, img.offset + img.data.length);
    if (from < to) buf.set(img.data.subarray(from - img.offset, to - img.offset), from - offset);
  }
  return n;
}
