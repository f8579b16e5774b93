// The backup's redo log (`redo` beside the applied record): entries acknowledged since the target's files were last
// flushed. A batch of plain writes is made durable by one append here instead of a flush of every file it wrote.
import fs from 'node:fs';
import path from 'node:path';
import { overwriteFlusher, type OverwriteFlusher } from '../fs/native.js';
import type { JournalEntry } from '../journal/entry.js';
import { crc32 } from '../wire/checksum.js';
import { decodeBatch, encodeBatch } from '../wire/frame.js';

/** The log's size, written once in full: a record's fdatasync is then an overwrite, with no metadata to commit. */
export const REDO_BYTES = 8 * 2 ** 20;
/** [u32 body length][u32 CRC-32 of the body], then the body: [u8 id length][journal id][batch body]. */
const HEADER = 8;

export interface RedoRecord {
  journalId: string;
  entries: Buffer[];
}

export class RedoLog {
  /** Where the next record goes: records before it are not covered by the applied record yet. */
  private at = 0;

  private constructor(
    private readonly fd: number,
    private readonly flusher: OverwriteFlusher,
  ) {}

  static open(dir: string): RedoLog {
    const fd = fs.openSync(path.join(dir, 'redo'), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    const size = fs.fstatSync(fd).size;
    if (size < REDO_BYTES) {
      fs.writeSync(fd, Buffer.alloc(REDO_BYTES - size), 0, REDO_BYTES - size, size);
      fs.fdatasyncSync(fd);
    }
    return new RedoLog(fd, overwriteFlusher(fd, dir, 'redo'));
  }

  /**
   * The records from the start of the log up to the first torn one. Records that a later checkpoint covered follow
   * the newest ones where the log was reused: the reader tells them by their seqs.
   */
  records(): RedoRecord[] {
    const buf = Buffer.alloc(REDO_BYTES);
    const n = fs.readSync(this.fd, buf, 0, REDO_BYTES, 0);
    const out: RedoRecord[] = [];
    for (let at = 0; at + HEADER <= n;) {
      const len = buf.readUInt32LE(at);
      if (len === 0 || at + HEADER + len > n) break;
      const body = buf.subarray(at + HEADER, at + HEADER + len);
      if (crc32(body) !== buf.readUInt32LE(at + 4)) break;
      const idLen = body[0]!;
      out.push({ journalId: body.subarray(1, 1 + idLen).toString(), entries: decodeBatch(body.subarray(1 + idLen)) });
      at += HEADER + len;
    }
    return out;
  }

  /** Writes a record, on stable storage once flush() returns; false (nothing written) when it does not fit. */
  append(journalId: string, entries: Buffer[]): boolean {
    const id = Buffer.from(journalId);
    const body = Buffer.concat([Buffer.from([id.length]), id, ...encodeBatch(entries)]);
    const at = this.at;
    if (at + HEADER + body.length > REDO_BYTES) return false;
    const header = Buffer.alloc(HEADER);
    header.writeUInt32LE(body.length, 0);
    header.writeUInt32LE(crc32(body), 4);
    this.at += HEADER + body.length;
    fs.writeSync(this.fd, Buffer.concat([header, body]), 0, HEADER + body.length, at);
    return true;
  }

  /** Every record appended so far is on stable storage once this returns. */
  flush(): void {
    // On this thread: a trip through libuv's pool costs two thread wake-ups, and the acknowledgement waits for it.
    this.flusher.flush();
  }

  /** The files hold everything logged and the applied record covers it: the log starts over. */
  reset(): void {
    this.at = 0;
  }

  close(): void {
    this.flusher.close();
    fs.closeSync(this.fd);
  }
}

/**
 * Whether applying `e` again, in order with the others logged since the last flush, over files that may already
 * have some of them gives the same result: plain writes and size changes, times, markers, and a file's create (its
 * name made again or kept, its data cut to nothing and written again by the entries after it: a create is a new file
 * on the primary). Other namespace changes and transactions are not (a rename done twice fails): a batch with one
 * flushes the files as before.
 */
export function redoable(e: JournalEntry): boolean {
  switch (e.op) {
    case 'write':
    case 'truncate':
      return e.txn === undefined;
    case 'create':
    case 'times':
    case 'fsync':
    case 'none':
      return true;
    default:
      return false;
  }
}

/**
 * Which stamps of each entry later entries of the run set again, with nothing between that changes what their
 * paths name: applying the last stamp of a path gives the same times. Every fsync marker carries its file's times, so a
 * batch of appends with fdatasync sets each file's times once, not once a record; and a directory whose names change
 * (create, rename, unlink in it: each stamps it) gets its times once a batch.
 */
export function supersededStamps(entries: JournalEntry[]): boolean[][] {
  const out: boolean[][] = new Array(entries.length);
  // Scanning back: the nearest later entry that stamps a path, that changes a name, that may change any.
  const stamped = new Map<string, number>();
  const changed = new Map<string, number>();
  let barrier = Infinity;
  const supersededAt = (p: string): boolean => {
    const next = stamped.get(p);
    if (next === undefined || next >= barrier) return false;
    // The operation runs before its own stamps: a change at `next` comes between too.
    for (let name = p; ; name = name.slice(0, Math.max(1, name.lastIndexOf('/')))) {
      if ((changed.get(name) ?? Infinity) <= next) return false;
      if (name === '/' || !name.includes('/')) return true;
    }
  };
  for (let i = entries.length - 1; i >= 0; i--) {
    const e = entries[i]!;
    const stamps = e.stamps ?? [];
    out[i] = stamps.map(([p]) => supersededAt(p));
    for (const [p] of stamps) stamped.set(p, i);
    const names = namesChanged(e);
    if (names === undefined) barrier = i;
    else for (const name of names) changed.set(name, i);
  }
  return out;
}

/** The names an entry makes refer to another file (or none), the paths under them too; undefined: it may change any. */
function namesChanged(e: JournalEntry): string[] | undefined {
  switch (e.op) {
    case 'rename':
      return [e.path, e.to];
    case 'link':
      return [e.to];
    case 'create':
    case 'mkdir':
    case 'symlink':
    case 'unlink':
    case 'rmdir':
    case 'remove':
      return [e.path];
    case 'chmod':
    case 'chown':
    case 'setxattr':
    case 'removexattr':
    case 'baseline-start':
    case 'baseline-end':
      return [];
    default:
      // Writes and truncates outside a transaction, times, markers: none. A transaction's are applied at its
      // commit, which swaps its files in: any.
      return redoable(e) ? [] : undefined;
  }
}
