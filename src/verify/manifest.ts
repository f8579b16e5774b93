// What a tree holds, described the same way on both sites so they can be compared: one entry per path with its
// type, owner, mode, size, mtime, xattrs and (when asked) a content hash; and per-block hashes for delta copies.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { getAttributeSync, listAttributesSync } from 'fs-xattr';
import { codeOf } from '../errors.js';
import { timestampToNs } from '../journal/entry.js';
import { readCommitted, type Committed, type CommittedView } from '../vos/committed.js';

/** Attributes drms keeps to itself (transaction control, the backup's commit generation): never compared. */
const PRIVATE_XATTRS = 'user.drms.';
const READ_CHUNK = 1024 * 1024;

export type EntryType = 'file' | 'dir' | 'symlink' | 'other';

export interface TreeEntry {
  path: string;
  type: EntryType;
  mode: number;
  uid: number;
  gid: number;
  /** Files: bytes, and mtime in nanoseconds (a string: more digits than a double holds). */
  size?: number;
  mtime?: string;
  /** Symlinks: the target. */
  target?: string;
  /** Attribute name → short hash of its value. */
  xattrs: Record<string, string>;
  /** Files, when hashes were asked for: sha256 of the contents. */
  hash?: string;
}

/** Which paths to describe (the primary describes only what its policy mirrors). */
export type Keep = (rel: string, isDir: boolean, xattrNames: string[]) => boolean;

export interface DescribeOptions {
  hashes: boolean;
  recursive: boolean;
  keep?: Keep;
  /** Files in an open transaction are described as the transaction found them (what the backup has). */
  committed?: Committed;
}

const digest = (b: Uint8Array) => createHash('sha256').update(b).digest('base64').slice(0, 22);

/** Work done between two yields to the event loop (FUSE requests and heartbeats are served in between). */
const SLICE_MS = 5;

/**
 * Describes `rel` under `root` (a directory path; '/' + rel must reach it) and, if recursive, everything below,
 * in sorted order, parents first. A path that does not exist gives no entries. System calls are synchronous (a
 * few microseconds each, against tens through libuv's pool), in slices between which the event loop runs.
 */
export async function describe(root: string, rel: string, opts: DescribeOptions): Promise<TreeEntry[]> {
  const out: TreeEntry[] = [];
  let sliceStart = Date.now();
  const visit = async (p: string, top: boolean): Promise<void> => {
    if (Date.now() - sliceStart > SLICE_MS) {
      await new Promise((r) => setImmediate(r));
      sliceStart = Date.now();
    }
    const abs = p === '/' ? root + '/' : root + p;
    let st: fs.BigIntStats | undefined;
    try {
      st = fs.lstatSync(abs, { bigint: true, throwIfNoEntry: false });
    } catch (err) {
      if (codeOf(err) !== 'ENOTDIR') throw err;
    }
    if (!st) return;
    const type: EntryType = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other';
    const names = type === 'symlink' ? [] : attributeNames(abs);
    if (opts.keep && !opts.keep(p, type === 'dir', names)) return;
    const e: TreeEntry = { path: p, type, mode: Number(st.mode) & 0o7777, uid: Number(st.uid), gid: Number(st.gid), xattrs: {} };
    for (const n of names.sort()) e.xattrs[n] = digest(attributeValue(abs, n));
    if (type === 'file') {
      const view = opts.committed?.(p);
      e.size = view ? view.size : Number(st.size);
      e.mtime = String(view ? timestampToNs(view.mtime) : st.mtimeNs);
      if (opts.hashes) e.hash = await hashFile(abs, view);
    } else if (type === 'symlink') {
      e.target = fs.readlinkSync(abs);
    }
    out.push(e);
    if (type === 'dir' && (top ? opts.recursive : true)) {
      for (const name of listDir(abs).sort()) await visit(path.posix.join(p, name), false);
    }
  };
  await visit(rel, true);
  return out;
}

function attributeNames(abs: string): string[] {
  try {
    return listAttributesSync(abs).filter((n) => !n.startsWith(PRIVATE_XATTRS));
  } catch {
    return [];
  }
}

function attributeValue(abs: string, name: string): Buffer {
  try {
    return getAttributeSync(abs, name);
  } catch {
    return Buffer.alloc(0);
  }
}

function listDir(abs: string): string[] {
  try {
    return fs.readdirSync(abs);
  } catch {
    return [];
  }
}

/** Contents hashed a megabyte at a time, yielding between reads once a slice is used up. */
async function hashFile(abs: string, view: CommittedView | undefined): Promise<string> {
  const h = createHash('sha256');
  let fd: number;
  try {
    fd = fs.openSync(abs, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch {
    return '';
  }
  try {
    const buf = Buffer.allocUnsafe(READ_CHUNK);
    let sliceStart = Date.now();
    for (let pos = 0; ; ) {
      const n = view ? readCommitted(fd, view, buf, pos) : fs.readSync(fd, buf, 0, READ_CHUNK, pos);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      pos += n;
      if (Date.now() - sliceStart > SLICE_MS) {
        await new Promise((r) => setImmediate(r));
        sliceStart = Date.now();
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('base64');
}

/** A file's size and the hash of each `blockSize` block, for copying only the blocks that differ. */
export interface BlockSums {
  size: number;
  blockSize: number;
  sums: string[];
}

export async function blockSums(abs: string, blockSize: number): Promise<BlockSums | undefined> {
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(abs, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch {
    return undefined;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return undefined;
    const sums: string[] = [];
    const buf = Buffer.allocUnsafe(blockSize);
    for (let pos = 0; pos < st.size; pos += blockSize) {
      const { bytesRead } = await fh.read(buf, 0, blockSize, pos);
      sums.push(blockDigest(buf.subarray(0, bytesRead)));
      if (bytesRead < blockSize) break;
    }
    return { size: st.size, blockSize, sums };
  } finally {
    await fh.close();
  }
}

export const blockDigest = digest;

/** How a backup entry differs from the primary's ('missing': only the primary has it; 'extra': only the backup). */
export type DifferenceKind = 'missing' | 'extra' | 'type' | 'content' | 'size' | 'mtime' | 'mode' | 'owner' | 'target' | 'xattrs';

export interface Difference {
  path: string;
  kinds: DifferenceKind[];
}

/**
 * What differs between two descriptions of the same path. Directory times are not compared: files outside the
 * policy change them on the primary only. Content is compared by hash when both have one.
 */
export function compareEntries(p: TreeEntry | undefined, b: TreeEntry | undefined): DifferenceKind[] {
  if (!p && !b) return [];
  if (!b) return ['missing'];
  if (!p) return ['extra'];
  if (p.type !== b.type) return ['type'];
  const kinds: DifferenceKind[] = [];
  if (p.type === 'file') {
    if (p.size !== b.size) kinds.push('size');
    if (p.hash && b.hash && p.hash !== b.hash) kinds.push('content');
    if (!sameTime(p.mtime, b.mtime)) kinds.push('mtime');
  }
  if (p.type === 'symlink' && p.target !== b.target) kinds.push('target');
  if (p.type !== 'symlink' && p.mode !== b.mode) kinds.push('mode');
  if (p.uid !== b.uid || p.gid !== b.gid) kinds.push('owner');
  if (JSON.stringify(p.xattrs) !== JSON.stringify(b.xattrs)) kinds.push('xattrs');
  return kinds;
}

/** Times are set from float seconds (Node's utimes): equal within a microsecond. */
function sameTime(a: string | undefined, b: string | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  const d = BigInt(a) - BigInt(b);
  return d <= 1000n && d >= -1000n;
}

/** Every path whose entries differ between the two descriptions, sorted (parents before children). */
export function diffTrees(primary: TreeEntry[], backup: TreeEntry[]): Difference[] {
  const onBackup = new Map(backup.map((e) => [e.path, e]));
  const out: Difference[] = [];
  for (const p of primary) {
    const kinds = compareEntries(p, onBackup.get(p.path));
    onBackup.delete(p.path);
    if (kinds.length) out.push({ path: p.path, kinds });
  }
  for (const b of onBackup.values()) out.push({ path: b.path, kinds: ['extra'] });
  return out.sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
}
