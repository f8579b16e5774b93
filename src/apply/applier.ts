// Applies journal entries to the backup's target, in order. Re-applying the last entry after a crash is harmless:
// every operation is written so that applying it to a tree that already has it changes nothing.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { getAttribute, listAttributes, removeAttribute, setAttribute } from 'fs-xattr';
import { ApplyError, codeOf } from '../errors.js';
import type { Logger } from '../log.js';
import { nsToTimestamp, type JournalEntry, type Stamp } from '../journal/entry.js';
import { setTimes, WrittenSpan } from '../fs/native.js';
import { XATTR_COMMIT_GEN } from '../vos/transactions.js';
import type { StagedTransactions } from './state.js';
import { Target } from './target.js';

const C = fs.constants;
const OPEN_FILES = 64;
/** Written files closed out of the open set but not yet made durable; sync() flushes them together. */
const UNSYNCED_CLOSING = 1024;

/** Entries a run of writes (writeRun) takes at most: one pwritev's buffers (the kernel's IOV_MAX). */
const RUN_ENTRIES = 1024;

/** Errors that mean "the backup cannot take data now" (disk full, read-only, I/O): stop and retry later, never skip. */
const RETRYABLE = new Set(['ENOSPC', 'EDQUOT', 'EROFS', 'EIO', 'EMFILE', 'ENFILE', 'ENOMEM']);

function isRetryable(err: unknown): boolean {
  return RETRYABLE.has(codeOf(err) ?? '');
}

/**
 * A file the applier holds open: a descriptor, not a FileHandle (whose promises cost about 40 µs of CPU more per
 * file here). Opened and flushed on libuv's pool: an open waits for the directory's lock, which a directory's fsync
 * holds through a disk flush on ext4 without a journal, and many files flush in parallel. Truncated and closed on
 * this thread: a few microseconds, against two thread wake-ups (this process serves no mount).
 */
class OpenFile {
  /** Written since the last flush: the pages given back after it (nobody reads the backup's copy until a takeover). */
  readonly written = new WrittenSpan();

  private constructor(readonly fd: number) {}

  static open(abs: string, flags: number, mode?: number): Promise<OpenFile> {
    return new Promise((resolve, reject) => fs.open(abs, flags, mode, (err, fd) => (err ? reject(err) : resolve(new OpenFile(fd)))));
  }

  /** fdatasync, or fsync (`data` false: a directory's entries). */
  flush(data = true): Promise<void> {
    return this.written.flush(this.fd, data);
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

export type WriteEntry = Extract<JournalEntry, { op: 'write' }>;

/** A write that needs nothing but its bytes: no transaction stages it, no stamps follow it. */
function plainWrite(e: JournalEntry | undefined): e is WriteEntry {
  return e?.op === 'write' && e.txn === undefined && !e.stamps?.length;
}

/**
 * How many entries from `from` on applyWrites() applies together (at least 1): plain writes to one file, in seq
 * order, each where the one before ended, as an application's appends are journaled.
 */
export function writeRun(entries: JournalEntry[], from: number): number {
  const first = entries[from];
  if (!plainWrite(first)) return 1;
  let n = 1;
  for (let end = first.offset + first.data.length; n < RUN_ENTRIES; n++) {
    const e = entries[from + n];
    if (!plainWrite(e) || e.path !== first.path || e.offset !== end || e.seq !== first.seq + n) break;
    end += e.data.length;
  }
  return n;
}

export class Applier {
  readonly target: Target;
  /** Open files by absolute path, most recent last; closed whenever names change. */
  private readonly files = new Map<string, OpenFile>();
  private readonly dirtyFiles = new Set<OpenFile>();
  /** Dirty files pushed out of `files`: still open, flushed and closed by the next sync(). */
  private readonly closing: OpenFile[] = [];
  private readonly dirtyDirs = new Set<string>();
  divergences = 0;
  /** Stamps skipped for a later entry's (see apply), by path. */
  private readonly owedStamps = new Map<string, Stamp>();
  /**
   * Between baseline-start and baseline-end the primary copies its tree while live operations flow, so an
   * operation on a path not copied yet fails here as expected (the copy brings it, verify settles the rest).
   */
  resyncing = false;

  /**
   * Without `staging` (redo on the primary's own directory) a transaction's writes apply in place and its
   * commit or abort changes nothing: the primary keeps before-images instead.
   */
  constructor(root: string, private readonly log: Logger, private readonly staging?: StagedTransactions) {
    this.target = new Target(root);
  }

  /**
   * Applies one entry; false if the operation failed with an errno (logged and counted as a divergence).
   * PathEscapeError, ApplyError and retryable errors (disk full, I/O) are thrown: nothing may skip them.
   * `superseded`: which of its stamps later entries set again (see supersededStamps); they are owed until then.
   */
  async apply(e: JournalEntry, superseded?: boolean[]): Promise<boolean> {
    try {
      await this.applyOp(e);
      for (const [i, stamp] of (e.stamps ?? []).entries()) {
        const [p, atime, mtime] = stamp;
        if (superseded?.[i]) {
          this.owedStamps.set(p, stamp);
          continue;
        }
        this.owedStamps.delete(p);
        setTimes(await this.target.resolve(p, { allowRoot: true }), atime, mtime);
      }
      return true;
    } catch (err) {
      // Only a system call's failure (numeric errno) is a divergence; anything else is a malformed entry.
      if (err instanceof ApplyError || isRetryable(err) || typeof (err as NodeJS.ErrnoException).errno !== 'number') throw err;
      if (this.resyncing) {
        this.log.debug({ seq: e.seq, op: e.op, path: 'path' in e ? e.path : undefined, err }, 'apply: not applicable yet during the initial copy');
        return false;
      }
      this.divergences++;
      this.log.error({ seq: e.seq, op: e.op, path: 'path' in e ? e.path : undefined, err }, 'apply: operation failed; the trees differ until repaired');
      return false;
    }
  }

  /**
   * Applies a run of writes (writeRun) with one pwritev: a 256-byte write applied alone cost this thread about
   * 3.4 µs in the system call. The bytes written; undefined where the file could not be written (an errno that is
   * not retryable): apply() then applies each entry, to say which failed. Throws what apply() throws.
   */
  async applyWrites(run: WriteEntry[]): Promise<number | undefined> {
    const first = run[0]!;
    try {
      const fh = await this.file(await this.target.resolve(first.path));
      const bytes = writeAllAt(fh.fd, run.map((e) => e.data), first.offset);
      fh.written.note(first.offset, bytes);
      this.dirtyFiles.add(fh);
      return bytes;
    } catch (err) {
      if (isRetryable(err) || typeof (err as NodeJS.ErrnoException).errno !== 'number') throw err;
      return undefined;
    }
  }

  /** At the end of a run: stamps skipped for entries that did not set them (stopped, or failed) are set, as far as they can be. */
  async settleStamps(): Promise<void> {
    for (const [p, atime, mtime] of this.owedStamps.values()) {
      await this.target.resolve(p, { allowRoot: true }).then((abs) => setTimes(abs, atime, mtime)).catch(() => undefined);
    }
    this.owedStamps.clear();
  }

  /**
   * Makes everything applied so far durable: file data, then the directories whose entries changed. Files are
   * flushed in parallel on libuv's pool: a copy of many small files is not one disk flush after another.
   */
  async sync(): Promise<void> {
    const closing = this.flushClosing();
    this.closingFlushed = Promise.resolve();
    await closing;
    await Promise.all([...this.dirtyFiles].map((fh) => fh.flush()));
    this.dirtyFiles.clear();
    for (const dir of this.dirtyDirs) {
      let fh: OpenFile;
      try {
        fh = await OpenFile.open(dir, C.O_RDONLY | C.O_DIRECTORY);
      } catch {
        continue; // gone since
      }
      try {
        await fh.flush(false);
      } finally {
        fh.close();
      }
    }
    this.dirtyDirs.clear();
  }

  /**
   * Everything in the page cache of the target's filesystem is written out and flushed: syncfs, by sync(1) on the
   * target handed to it as its stdin (a demoted primary's target is a /proc/self/fd path, under its own mount).
   */
  async flushFilesystem(): Promise<void> {
    let fd: number | undefined;
    try {
      fd = fs.openSync(this.target.root, C.O_RDONLY | C.O_DIRECTORY);
      const child = spawn('sync', ['--file-system', '/dev/stdin'], { stdio: [fd, 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const code = await new Promise<number | null>((resolve, reject) => child.on('error', reject).on('close', resolve));
      if (code !== 0) throw new Error(stderr.trim() || `sync exited with ${code}`);
    } catch (err) {
      throw new ApplyError(`could not flush the target's filesystem at ${this.target.root}: ${(err as Error).message}`, { path: this.target.root });
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  }

  async close(): Promise<void> {
    await this.sync();
    for (const fh of this.files.values()) fh.close(); // all clean once synced
    this.files.clear();
  }

  private async applyOp(e: JournalEntry): Promise<void> {
    const t = this.target;
    if (this.staging && (e.op === 'write' || e.op === 'truncate') && e.txn !== undefined) {
      await t.resolve(e.path); // refuse a bad path now, not at the commit
      this.staging.stage(String(e.txn), e);
      return;
    }
    // This process serves no mount: a pwrite into the page cache or a metadata call costs less on this thread than a
    // trip through libuv's pool (two thread wake-ups); file opens and flushes still go through it.
    switch (e.op) {
      case 'write': {
        const fh = await this.file(await t.resolve(e.path));
        fs.writeSync(fh.fd, e.data, 0, e.data.length, e.offset);
        fh.written.note(e.offset, e.data.length);
        this.dirtyFiles.add(fh);
        return;
      }
      case 'truncate': {
        const fh = await this.file(await t.resolve(e.path));
        fs.ftruncateSync(fh.fd, e.size);
        this.dirtyFiles.add(fh);
        return;
      }
      case 'create': {
        const abs = await t.resolve(e.path);
        this.forget(abs);
        const fh = await OpenFile.open(abs, C.O_CREAT | C.O_TRUNC | C.O_WRONLY | C.O_NOFOLLOW, e.mode);
        fs.fchmodSync(fh.fd, e.mode);
        fs.fchownSync(fh.fd, e.uid, e.gid);
        this.remember(abs, fh);
        this.dirtyFiles.add(fh);
        this.dirtyDirs.add(path.dirname(abs));
        return;
      }
      case 'mkdir': {
        const abs = await t.resolve(e.path);
        await fs.promises.mkdir(abs, e.mode).catch((err) => ignoreIf(err, 'EEXIST'));
        await fs.promises.chmod(abs, e.mode);
        await fs.promises.lchown(abs, e.uid, e.gid);
        this.dirtyDirs.add(path.dirname(abs));
        return;
      }
      case 'symlink': {
        const abs = await t.resolve(e.path);
        await this.replaceName(abs, () => fs.promises.symlink(e.target, abs), async () => (await fs.promises.readlink(abs)) === e.target);
        await fs.promises.lchown(abs, e.uid, e.gid);
        return;
      }
      case 'link': {
        const from = await t.resolve(e.path);
        const to = await t.resolve(e.to);
        await this.replaceName(to, () => fs.promises.link(from, to), async () => sameInode(from, to));
        return;
      }
      case 'unlink': {
        // Only this name changes: no directory checked on the way (target.ts) can be unlinked, and no other open file.
        // Its directory needs a flush only if a name went (a short-lived file's rename leaves an unlink of a name
        // that is not there).
        const abs = await t.resolve(e.path);
        this.forget(abs);
        if (unless('ENOENT', () => fs.unlinkSync(abs))) this.dirtyDirs.add(path.dirname(abs));
        return;
      }
      case 'rmdir': {
        const abs = await t.resolve(e.path);
        this.namesChange(abs);
        unless('ENOENT', () => fs.rmdirSync(abs));
        return;
      }
      case 'rename': {
        const from = await t.resolve(e.path);
        const to = await t.resolve(e.to);
        this.namesChange(from, to);
        try {
          fs.renameSync(from, to);
        } catch (err) {
          // Already applied before a crash: the source is gone and the destination is there.
          if (codeOf(err) !== 'ENOENT' || !fs.lstatSync(to, { throwIfNoEntry: false })) throw err;
        }
        return;
      }
      case 'chmod': {
        const abs = await t.resolve(e.path, { allowRoot: true });
        if (!(await fs.promises.lstat(abs)).isSymbolicLink()) await fs.promises.chmod(abs, e.mode);
        return;
      }
      case 'chown':
        return fs.promises.lchown(await t.resolve(e.path, { allowRoot: true }), e.uid, e.gid);
      case 'times':
        return; // the stamps carry the times
      case 'setxattr': {
        const abs = await t.resolve(e.path, { allowRoot: true });
        if ((await fs.promises.lstat(abs)).isSymbolicLink()) return;
        return setAttribute(abs, e.name, Buffer.from(e.value));
      }
      case 'removexattr': {
        const abs = await t.resolve(e.path, { allowRoot: true });
        if ((await getAttribute(abs, e.name).then(() => true, () => false))) await removeAttribute(abs, e.name);
        return;
      }
      case 'fsync':
        // The primary's fsync needs nothing more here: sync() makes every file written in the batch durable
        // before the batch is acknowledged (one flush for the batch, not one per marker).
        await t.resolve(e.path);
        return;
      case 'txn-commit':
        return this.commit(e.txn, e.paths);
      case 'txn-abort':
        this.staging?.drop(e.txn);
        return;
      case 'remove': {
        const abs = await t.resolve(e.path);
        this.namesChange(abs);
        return fs.promises.rm(abs, { recursive: true, force: true });
      }
      case 'baseline-start':
      case 'baseline-end':
        this.resyncing = e.op === 'baseline-start';
        return;
      case 'none':
        return;
      default:
        throw new ApplyError(`unknown operation ${(e as { op: unknown }).op}`, { seq: (e as JournalEntry).seq });
    }
  }

  /**
   * Applies a transaction's staged writes so that no reader sees part of it: each file's new contents are built in
   * a copy beside it (reflinked where the filesystem can), made durable, then renamed over the original; the
   * target root's commit generation is odd while the renames run, for readers of several files. A crash part way
   * redoes the whole commit from the staged writes, which is harmless on files that already have them.
   */
  private async commit(txn: string, paths: string[]): Promise<void> {
    if (!this.staging) return;
    const staged = this.staging.entries(txn);
    this.namesChange();
    const swaps: Array<[tmp: string, abs: string]> = [];
    // The swap adds and renames names in the files' directories; on the primary their times did not change.
    const dirs = new Map<string, fs.BigIntStats>();
    for (const p of paths) {
      const dir = path.dirname(await this.target.resolve(p));
      if (!dirs.has(dir)) dirs.set(dir, await fs.promises.lstat(dir, { bigint: true }));
    }
    for (const p of paths) {
      const abs = await this.target.resolve(p);
      const tmp = path.join(path.dirname(abs), `.${path.basename(abs)}.drms-commit`);
      await fs.promises.copyFile(abs, tmp, C.COPYFILE_FICLONE);
      const st = await fs.promises.lstat(abs);
      await fs.promises.chown(tmp, st.uid, st.gid);
      await fs.promises.chmod(tmp, st.mode & 0o7777);
      for (const name of await listAttributes(abs)) await setAttribute(tmp, name, await getAttribute(abs, name));
      const fh = await OpenFile.open(tmp, C.O_WRONLY | C.O_NOFOLLOW);
      try {
        for (const w of staged) {
          if (w.op === 'write' && w.path === p) fs.writeSync(fh.fd, w.data, 0, w.data.length, w.offset);
          else if (w.op === 'truncate' && w.path === p) fs.ftruncateSync(fh.fd, w.size);
        }
        await fh.flush();
      } finally {
        fh.close();
      }
      swaps.push([tmp, abs]);
    }
    const root = this.target.root + '/';
    const gen = Number((await getAttribute(root, XATTR_COMMIT_GEN).catch(() => Buffer.from('0'))).toString()) || 0;
    const swapping = gen % 2 ? gen + 2 : gen + 1;
    await setAttribute(root, XATTR_COMMIT_GEN, Buffer.from(String(swapping)));
    for (const [tmp, abs] of swaps) {
      await fs.promises.rename(tmp, abs);
      this.dirtyDirs.add(path.dirname(abs));
    }
    await setAttribute(root, XATTR_COMMIT_GEN, Buffer.from(String(swapping + 1)));
    for (const [d, st] of dirs) setTimes(d, nsToTimestamp(st.atimeNs), nsToTimestamp(st.mtimeNs));
    this.staging.drop(txn);
  }

  /** Creates a name, or leaves it if it already is what we want, or replaces what is there. */
  private async replaceName(abs: string, make: () => Promise<void>, alreadyDone: () => Promise<boolean>): Promise<void> {
    this.namesChange(abs);
    try {
      await make();
    } catch (err) {
      if (codeOf(err) !== 'EEXIST') throw err;
      if (await alreadyDone().catch(() => false)) return;
      await fs.promises.rm(abs, { recursive: true, force: true });
      await make();
    }
    this.dirtyDirs.add(path.dirname(abs));
  }

  private namesChange(...paths: string[]): void {
    this.target.namesChanged();
    this.closeFiles();
    for (const p of paths) this.dirtyDirs.add(path.dirname(p));
  }

  private async file(abs: string): Promise<OpenFile> {
    const open = this.files.get(abs);
    if (open) return open;
    const fh = await OpenFile.open(abs, C.O_WRONLY | C.O_NOFOLLOW);
    this.remember(abs, fh);
    return fh;
  }

  private remember(abs: string, fh: OpenFile): void {
    this.files.set(abs, fh);
    if (this.files.size > OPEN_FILES) {
      const [oldest, ofh] = this.files.entries().next().value as [string, OpenFile];
      this.files.delete(oldest);
      this.letGo(ofh);
    }
  }

  /**
   * A file no longer wanted open: one with unsynced data is flushed and closed by the next sync(), which comes before
   * its batch is acknowledged (a batch that changes names always ends in one), so a rename or an unlink does not
   * wait for a disk flush of each file written before it.
   */
  private letGo(fh: OpenFile): void {
    if (!this.dirtyFiles.delete(fh)) {
      try {
        fh.close();
      } catch {
        // nothing unsynced in it: a failed close loses nothing
      }
      return;
    }
    this.closing.push(fh);
    if (this.closing.length >= UNSYNCED_CLOSING) this.flushClosing().catch(() => undefined); // sync() reports a failure
  }

  private closingFlushed: Promise<unknown> = Promise.resolve();

  /**
   * Flushes and closes the files in `closing`; the promise covers every flush started before, too. A file with no
   * name left (unlinked since) is only closed: nothing can read its data again.
   */
  private flushClosing(): Promise<unknown> {
    const batch = this.closing.splice(0);
    const done = Promise.all(batch.map(async (fh) => {
      try {
        if (fs.fstatSync(fh.fd).nlink > 0) await fh.flush();
      } finally {
        fh.close();
      }
    }));
    this.closingFlushed = Promise.all([this.closingFlushed, done]);
    return this.closingFlushed;
  }

  private forget(abs: string): void {
    const fh = this.files.get(abs);
    if (!fh) return;
    this.files.delete(abs);
    this.letGo(fh);
  }

  private closeFiles(): void {
    for (const fh of this.files.values()) this.letGo(fh);
    this.files.clear();
  }
}

/** Writes `bufs` one after another from `position`, on through short writes; the bytes written. */
function writeAllAt(fd: number, bufs: Uint8Array[], position: number): number {
  let total = 0;
  for (const b of bufs) total += b.length;
  for (let left = total; left > 0;) {
    let n = fs.writevSync(fd, bufs, position + total - left);
    if (n === 0) throw Object.assign(new Error(`pwritev wrote nothing of ${left} bytes`), { code: 'EIO', errno: -os.constants.errno.EIO });
    left -= n;
    while (bufs.length && n >= bufs[0]!.length) n -= bufs.shift()!.length;
    if (n > 0) bufs[0] = bufs[0]!.subarray(n);
  }
  return total;
}

function ignoreIf(err: unknown, code: string): void {
  if (codeOf(err) !== code) throw err;
}

/** Runs `call`, taking `code` for "already done" (applied before a crash); false when it was. */
function unless(code: string, call: () => void): boolean {
  try {
    call();
    return true;
  } catch (err) {
    ignoreIf(err, code);
    return false;
  }
}

async function sameInode(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([fs.promises.lstat(a), fs.promises.lstat(b)]);
  return x.ino === y.ino && x.dev === y.dev;
}
