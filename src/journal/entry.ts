// What the journal records: one mutating filesystem operation, in capture order.
import { Packr } from 'msgpackr';
import type { RecordChange } from '../vos/layout.js';

/** Seconds and nanoseconds, as the kernel keeps them. */
export type Timestamp = [sec: number, nsec: number];

/** A path's atime and mtime after an operation, so the backup can set the same. */
export type Stamp = [path: string, atime: Timestamp, mtime: Timestamp];

/** Paths are relative to the mirrored root and start with '/'. */
export type Op =
  | { op: 'write'; path: string; offset: number; data: Uint8Array; record?: RecordChange; txn?: string }
  | { op: 'truncate'; path: string; size: number; record?: RecordChange; txn?: string }
  | { op: 'create'; path: string; mode: number; uid: number; gid: number }
  | { op: 'mkdir'; path: string; mode: number; uid: number; gid: number }
  | { op: 'symlink'; path: string; target: string; uid: number; gid: number }
  | { op: 'link'; path: string; to: string }
  | { op: 'unlink'; path: string }
  | { op: 'rmdir'; path: string }
  | { op: 'rename'; path: string; to: string }
  | { op: 'chmod'; path: string; mode: number }
  | { op: 'chown'; path: string; uid: number; gid: number }
  | { op: 'times'; path: string }
  | { op: 'setxattr'; path: string; name: string; value: Uint8Array }
  | { op: 'removexattr'; path: string; name: string }
  | { op: 'fsync'; path: string }
  /** A transaction's writes (entries tagged with its id) take effect together; `paths` are its files. */
  | { op: 'txn-commit'; txn: string; paths: string[] }
  /** A transaction's writes are void (the primary restored its before-images). */
  | { op: 'txn-abort'; txn: string }
  /** Backup only: the path left what the primary mirrors (renamed out of the policy, or not on the primary). */
  | { op: 'remove'; path: string }
  /** The initial copy (or a resync) starts: until its end, operations on paths the backup lacks are expected. */
  | { op: 'baseline-start' }
  | { op: 'baseline-end' }
  /** An operation that failed after its seq was taken, with later entries already journaled: a gap is not allowed. */
  | { op: 'none' };

/**
 * An Op with its place in the journal. `stamps` carries times the op changed. `done` marks an entry appended
 * with no operation in flight behind it (a copy of what is on disk, a marker): recovery never redoes it.
 */
export type JournalEntry = Op & { seq: number; ts: number; stamps?: Stamp[]; done?: true };

const packr = new Packr({ useRecords: false, moreTypes: false });

export function encodeEntry(entry: JournalEntry): Buffer {
  return packr.pack(entry);
}

export function decodeEntry(bytes: Uint8Array): JournalEntry {
  return packr.unpack(bytes) as JournalEntry;
}

export function nsToTimestamp(ns: bigint): Timestamp {
  return [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
}

export function timestampToNs([sec, nsec]: Timestamp): bigint {
  return BigInt(sec) * 1_000_000_000n + BigInt(nsec);
}
