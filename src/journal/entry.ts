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

/** What activity counters need of an entry: its kind, path and the bytes it writes. */
export interface EntrySummary {
  op: Op['op'];
  path: string | undefined;
  bytes: number;
}

export function summarize(op: Op): EntrySummary {
  return { op: op.op, path: 'path' in op ? op.path : undefined, bytes: op.op === 'write' ? op.data.length : 0 };
}

/**
 * summarize(decodeEntry(bytes)) without decoding the entry: the native capture writes `{op, path[, offset,
 * data], ...}` in that order, so the summary is read from the first few headers. Any other layout is decoded.
 */
export function summarizeEncoded(bytes: Buffer): EntrySummary {
  let peeked: EntrySummary | undefined;
  try {
    peeked = peekSummary(bytes);
  } catch {
    // a header ran past the end: decodeEntry says what is wrong
  }
  return peeked ?? summarize(decodeEntry(bytes));
}

const KEY = { op: Buffer.from('op'), path: Buffer.from('path'), offset: Buffer.from('offset'), data: Buffer.from('data'), write: Buffer.from('write') };

function peekSummary(bytes: Buffer): EntrySummary | undefined {
  // fixmap (the native capture) or map16/map32 (msgpackr)
  let at = (bytes[0]! & 0xf0) === 0x80 ? 1 : bytes[0] === 0xde ? 3 : bytes[0] === 0xdf ? 5 : 0;
  if (!at) return undefined;
  // The msgpack str at `at` as [start, end), or undefined if `at` holds no str.
  const str = (): [number, number] | undefined => {
    const b = bytes[at];
    let start: number;
    if (b === undefined) return undefined;
    else if (b >= 0xa0 && b <= 0xbf) start = at + 1;
    else if (b === 0xd9) start = at + 2;
    else if (b === 0xda) start = at + 3;
    else if (b === 0xdb) start = at + 5;
    else return undefined;
    const len = b <= 0xbf ? b & 0x1f : bytes.readUIntBE(at + 1, start - at - 1);
    at = start + len;
    return at <= bytes.length ? [start, at] : undefined;
  };
  // Compared byte by byte: a string made of each would cost more than the rest of the peek.
  const is = (s: [number, number] | undefined, name: Buffer): boolean => {
    if (s === undefined || s[1] - s[0] !== name.length) return false;
    for (let i = 0; i < name.length; i++) if (bytes[s[0] + i] !== name[i]) return false;
    return true;
  };
  const key = (name: Buffer): boolean => is(str(), name);
  if (!key(KEY.op)) return undefined;
  const op = str();
  if (!op || !key(KEY.path)) return undefined;
  const write = is(op, KEY.write);
  const p = str();
  if (!p) return undefined;
  const path = bytes.toString('utf8', p[0], p[1]);
  if (!write) return { op: bytes.toString('latin1', op[0], op[1]) as Op['op'], path, bytes: 0 };
  if (!key(KEY.offset)) return undefined;
  const u = bytes[at]!;
  const uintSize = u < 0x80 ? 1 : u === 0xcc ? 2 : u === 0xcd ? 3 : u === 0xce ? 5 : u === 0xcb ? 9 : 0;
  if (!uintSize) return undefined;
  at += uintSize;
  if (!key(KEY.data)) return undefined;
  const h = bytes[at];
  const binSize = h === 0xc4 ? 1 : h === 0xc5 ? 2 : h === 0xc6 ? 4 : 0;
  return binSize ? { op: 'write', path, bytes: bytes.readUIntBE(at + 1, binSize) } : undefined;
}

export function nsToTimestamp(ns: bigint): Timestamp {
  return [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
}

export function timestampToNs([sec, nsec]: Timestamp): bigint {
  return BigInt(sec) * 1_000_000_000n + BigInt(nsec);
}
