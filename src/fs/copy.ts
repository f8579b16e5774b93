// Journals a path's current state as read from the real directory, so the backup gets it whole: the initial copy,
// repairs, and files that enter the policy by a rename. Only blocks that differ from the backup's are sent.
import fs from 'node:fs';
import path from 'node:path';
import { getAttributeSync, listAttributesSync } from 'fs-xattr';
import { codeOf } from '../errors.js';
import { nsToTimestamp, type Op, type Stamp } from '../journal/entry.js';
import type { Journal } from '../journal/journal.js';
import { stampsOf } from '../journal/stamps.js';
import { blockDigest, type BlockSums, type TreeEntry } from '../verify/manifest.js';
import { readCommitted, type Committed } from '../vos/committed.js';

export const BLOCK_SIZE = 64 * 1024;
/** Bytes read and journaled per step; mutations wait for at most one step. */
const STEP = 16 * BLOCK_SIZE;
const PRIVATE_XATTRS = 'user.drms.';
/** A copy waits for the backup when this much of the journal is unapplied, so a big copy does not fill the disk. */
const COPY_BACKLOG_BYTES = 256 * 2 ** 20;

/** Runs one step of a copy with the mount's mutations held back (identity when the caller already holds them). */
export type Locked = <T>(fn: () => Promise<T>) => Promise<T>;

export interface CopyTarget {
  /** What the backup has at this path, if known: decides what to remove first and which xattrs to drop. */
  backup?: TreeEntry;
  /** The backup's block hashes for the file: only differing blocks are sent. */
  sums?: BlockSums;
}

export interface CopyStats {
  files: number;
  dirs: number;
  /** Bytes read from the primary's files, and bytes journaled (the blocks that differed). */
  bytesRead: number;
  bytesSent: number;
}

/** Whether the policy mirrors a path (the file's xattr names tell a record file). */
export type Mirrors = (rel: string, isDir: boolean, xattrNames: string[]) => boolean;

export class PathCopier {
  readonly stats: CopyStats = { files: 0, dirs: 0, bytesRead: 0, bytesSent: 0 };
  /** Files copied so far by inode, so a second name of a hard-linked file is journaled as a link. */
  private readonly linked = new Map<string, string>();

  /**
   * `root` reaches the real directory ('/' + rel appended). With `throttle`, a copy waits between steps while
   * the backup is far behind (not possible for a copy made inside one held mutation slot). A file in an open
   * transaction is copied as the transaction found it (`committed`): the backup applies the transaction's staged
   * writes over that at its commit, and an abort leaves it as it was.
   */
  constructor(
    private readonly root: string,
    private readonly journal: Journal,
    private readonly mirrors: Mirrors,
    private readonly locked: Locked,
    private readonly throttle: boolean,
    private readonly committed: Committed,
  ) {}

  private abs(rel: string): string {
    return rel === '/' ? this.root + '/' : this.root + rel;
  }

  /** Journaled at once, not with the next batch: the copy appends in a loop, and its throttle counts what lmdb holds. */
  private append(op: Op, stamps?: Stamp[]): number {
    const seq = this.journal.append(op, stamps);
    this.journal.commitNow();
    return seq;
  }

  private async stampNow(rel: string): Promise<void> {
    this.append({ op: 'times', path: rel }, stampsOf(this.root, [rel]));
  }

  /**
   * Brings the backup's `rel` to what the primary has now (and, for a directory with `recursive`, everything
   * below it). A path the primary lacks or does not mirror is removed from the backup.
   */
  async copy(rel: string, target: CopyTarget = {}, recursive = false): Promise<void> {
    const st = await this.locked(async () => {
      const st = lstatIfAny(this.abs(rel));
      const names = st && !st.isSymbolicLink() ? this.xattrNames(rel) : [];
      if (!st || (!st.isDirectory() && !st.isFile() && !st.isSymbolicLink()) || !this.mirrors(rel, st.isDirectory(), names)) {
        if (rel !== '/') this.append({ op: 'remove', path: rel });
        return undefined;
      }
      if (rel !== '/' && target.backup && target.backup.type !== typeOf(st)) {
        this.append({ op: 'remove', path: rel });
        target = {};
      }
      return st;
    });
    if (!st) return;
    if (st.isDirectory()) {
      await this.locked(async () => {
        this.stats.dirs++;
        const owner = { uid: Number(st.uid), gid: Number(st.gid) };
        const mode = Number(st.mode) & 0o7777;
        if (rel !== '/') this.append({ op: 'mkdir', path: rel, mode, ...owner });
        this.append({ op: 'chmod', path: rel, mode });
        this.append({ op: 'chown', path: rel, ...owner });
        this.copyXattrs(rel, target.backup);
      });
      if (recursive) {
        for (const name of (await fs.promises.readdir(this.abs(rel)).catch(() => [] as string[])).sort()) {
          await this.copy(path.posix.join(rel, name), {}, true);
        }
      }
      // Children change a directory's times, so its times go last.
      await this.locked(() => this.stampNow(rel));
    } else if (st.isSymbolicLink()) {
      await this.locked(async () => {
        const target = await fs.promises.readlink(this.abs(rel));
        this.append({ op: 'symlink', path: rel, target, uid: Number(st.uid), gid: Number(st.gid) });
        await this.stampNow(rel);
      });
    } else {
      await this.copyFile(rel, st, target);
    }
  }

  /**
   * Copies a file step by step, each step with mutations held back; between steps writers run, and what they
   * change is journaled after the blocks already sent. I/O in a step is synchronous: it reads the real directory
   * (never the mount), and a step holds the mutations anyway.
   */
  private async copyFile(rel: string, first: fs.BigIntStats, target: CopyTarget): Promise<void> {
    const inode = `${first.dev}:${first.ino}`;
    let fd: number;
    try {
      fd = fs.openSync(this.abs(rel), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    } catch {
      return; // gone since the lstat: its unlink or rename was journaled
    }
    try {
      const sums = target.backup?.type === 'file' ? target.sums : undefined;
      const buf = Buffer.allocUnsafe(STEP);
      for (let offset = 0; ; offset += STEP) {
        if (this.throttle && offset > 0) await this.roomInJournal();
        const step = await this.locked(async () => {
          if (!this.same(rel, fd)) return 'moved';
          if (offset === 0) {
            const earlier = first.nlink > 1n ? this.linked.get(inode) : undefined;
            if (earlier && !sums) {
              this.append({ op: 'link', path: earlier, to: rel });
              return 'linked';
            }
            if (first.nlink > 1n) this.linked.set(inode, rel);
            if (!sums) this.append({ op: 'create', path: rel, mode: Number(first.mode) & 0o7777, uid: Number(first.uid), gid: Number(first.gid) });
            this.stats.files++;
          }
          const view = this.committed(rel);
          const n = view ? readCommitted(fd, view, buf, offset) : fs.readSync(fd, buf, 0, STEP, offset);
          this.stats.bytesRead += n;
          this.sendChanged(rel, offset, buf.subarray(0, n), sums);
          if (n === STEP) return 'more';
          // The last step: size, mode, owner, attributes and times as they are now (committed, in a transaction).
          const st = fs.fstatSync(fd, { bigint: true });
          this.append({ op: 'truncate', path: rel, size: view ? view.size : Number(st.size) });
          this.append({ op: 'chmod', path: rel, mode: Number(st.mode) & 0o7777 });
          this.append({ op: 'chown', path: rel, uid: Number(st.uid), gid: Number(st.gid) });
          this.copyXattrs(rel, target.backup);
          this.append({ op: 'times', path: rel }, [view ? [rel, view.atime, view.mtime] : [rel, nsToTimestamp(st.atimeNs), nsToTimestamp(st.mtimeNs)]]);
          return 'done';
        });
        // Renamed or replaced while copying: its new name is settled by the next verify.
        if (step !== 'more') return;
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Journals the blocks of `data` (at `offset`) that differ from the backup's, runs of them as one write. */
  private sendChanged(rel: string, offset: number, data: Buffer, sums: BlockSums | undefined): void {
    let runStart = -1;
    const flush = (end: number) => {
      if (runStart < 0) return;
      const bytes = Buffer.from(data.subarray(runStart, end));
      this.append({ op: 'write', path: rel, offset: offset + runStart, data: bytes });
      this.stats.bytesSent += bytes.length;
      runStart = -1;
    };
    for (let at = 0; at < data.length; at += BLOCK_SIZE) {
      const block = data.subarray(at, at + BLOCK_SIZE);
      const i = (offset + at) / BLOCK_SIZE;
      const same = sums !== undefined && sums.sums[i] === blockDigest(block);
      if (same) flush(at);
      else if (runStart < 0) runStart = at;
    }
    flush(data.length);
  }

  /** The path still names the file being copied (not renamed away or replaced since it was opened). */
  private same(rel: string, fd: number): boolean {
    const a = fs.lstatSync(this.abs(rel), { bigint: true, throwIfNoEntry: false });
    const b = fs.fstatSync(fd, { bigint: true });
    return a !== undefined && a.ino === b.ino && a.dev === b.dev;
  }

  private xattrNames(rel: string): string[] {
    try {
      return listAttributesSync(this.abs(rel)).filter((n) => !n.startsWith(PRIVATE_XATTRS));
    } catch {
      return [];
    }
  }

  /** Sets every attribute the primary has; removes those only the backup has. */
  private copyXattrs(rel: string, backup: TreeEntry | undefined): void {
    const names = this.xattrNames(rel);
    for (const name of names) this.append({ op: 'setxattr', path: rel, name, value: getAttributeSync(this.abs(rel), name) });
    for (const name of Object.keys(backup?.xattrs ?? {})) if (!names.includes(name)) this.append({ op: 'removexattr', path: rel, name });
  }

  /** Waits while the backup is behind by more than COPY_BACKLOG_BYTES. */
  private async roomInJournal(): Promise<void> {
    while (this.journal.backlogBytes() > COPY_BACKLOG_BYTES) {
      await new Promise((resolve) => this.journal.once('trimmed', resolve));
    }
  }
}

function lstatIfAny(abs: string): fs.BigIntStats | undefined {
  try {
    return fs.lstatSync(abs, { bigint: true });
  } catch (err) {
    if (codeOf(err) === 'ENOENT' || codeOf(err) === 'ENOTDIR') return undefined;
    throw err;
  }
}

function typeOf(st: fs.BigIntStats): TreeEntry['type'] {
  return st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other';
}
