// The FUSE operations: pass each one through to the directory under the mount, and journal every mutation.
// Mutations run one at a time (Serializer) so that journal order equals the order they took effect, and each is
// journaled before it runs, so no change can reach the files without its entry (see mutate and fs/recovery.ts).
import fs from 'node:fs';
import { constants as C } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { getAttributeSync, listAttributesSync, removeAttributeSync, setAttributeSync } from 'fs-xattr';
import { codeOf, errnoOf } from '../errors.js';
import type { Logger } from '../log.js';
import { nsToTimestamp, type Op, type Stamp, type Timestamp } from '../journal/entry.js';
import type { Journal } from '../journal/journal.js';
import { stampOf, stampsOf } from '../journal/stamps.js';
import type { EventLog } from '../admin/events.js';
import type { Policy, SyncMode } from '../policy/policy.js';
import { RecordRuleError, XATTR_ORGANIZATION, XATTR_RECORD_SIZE } from '../vos/layout.js';
import { RecordRules } from '../vos/record-rules.js';
import type { CommittedView } from '../vos/committed.js';
import { parseTxnControl, TransactionTable, TxnError, XATTR_TXN, type TxnControl } from '../vos/transactions.js';
import { nativeAddon, setTimes } from './native.js';
import { HandleMode, type Capture } from './binding.js';
import { PathCopier } from './copy.js';
import { Serializer } from './serial.js';

export type ReplicationMode = 'async' | 'sync';

export interface PassthroughOptions {
  mode: ReplicationMode;
  /** Sync mode: how long fsync/close waits for the backup. */
  syncTimeoutMs: number;
  /** Sync mode, after the timeout: fail the call with EIO, or degrade to async until the backup catches up. */
  onSyncTimeout: 'fail' | 'degrade';
  /** Unapplied journal bytes at which writers are held until the backup catches up (0: no cap). */
  maxBacklogBytes: number;
  /** Which paths are mirrored; operations on the others pass through unjournaled. */
  policy: Policy;
  events: EventLog;
  log: Logger;
}

interface Handle {
  /** Written since the last time stamp was journaled. */
  dirty: boolean;
  /** Last journal seq recorded through this handle. */
  lastSeq: number;
  /** Opened O_SYNC/O_DSYNC: each write is durable (and in sync mode replicated) before it returns. */
  syncWrites: boolean;
}

type Reply = (code: number, ...values: unknown[]) => void;

/** What a mutation reports: the reply value, and facts only its outcome tells (times, owner, short writes). */
interface Outcome<T> {
  value: T;
  final?: Op;
  stamps?: Stamp[];
}

/** A time a utimens asks for, as the bindings pass it. */
export type TimeArg = Timestamp | 'now' | 'omit';

/** The FUSE operations, in fuse-native's argument order (fs/binding.ts adapts them to each binding). */
export type Operations = ReturnType<Passthrough['operations']>;

const NO_ID = 0xffffffff;
const FALLOC_KEEP_SIZE = 0x01;
const FALLOC_PUNCH_HOLE = 0x02;
const FALLOC_ZERO_RANGE = 0x10;
/** A punched or zeroed range is journaled as zeros: up to this much. */
const MAX_ZEROED = 64 * 2 ** 20;

const O_ACCMODE = 3;
const XATTR_CREATE = 1;
const XATTR_REPLACE = 2;
/** Attributes drms answers itself (user.drms.txn) or keeps to itself on the backup; never stored or mirrored. */
const RESERVED_XATTRS = 'user.drms.';
const CAPABILITY = 'security.capability';
const errno = osConstants.errno;
const fail = (message: string, code: number) => Object.assign(new Error(message), { errno: -code });

/** lstat of the real directory, on this thread: see operations(). undefined when the path cannot be examined. */
const lstatQuietly = (p: string): fs.BigIntStats | undefined => {
  try {
    return fs.lstatSync(p, { bigint: true });
  } catch {
    return undefined;
  }
};

export class Passthrough {
  private readonly serial = new Serializer();
  private readonly handles = new Map<number, Handle>();
  private readonly rules: RecordRules;
  private readonly txns: TransactionTable;
  /** Paths known to have no security.capability, which the kernel asks for before every write. */
  private readonly noCapability = new Set<string>();

  /** Journals files that enter the policy (rename, link, a record-file declaration) whole. */
  private readonly copier: PathCopier;

  /** `root` reaches the directory under the mount: /proc/self/fd/<fd opened before mounting>. */
  constructor(private readonly root: string, private readonly journal: Journal, private readonly opts: PassthroughOptions) {
    this.rules = new RecordRules((p) => this.abs(p), () => this.capture?.namesChanged() ?? 0);
    this.txns = new TransactionTable(journal, (p) => this.abs(p));
    this.copier = new PathCopier(root, journal, (p, isDir) => this.mirrored(p, isDir ? 'dir' : 'file'), (fn) => fn(), false, (p) => this.txns.committedView(p));
    journal.on('ingested', (bytes: number) => this.captured(bytes));
    journal.on('created', (p: string) => this.detectCreated(p));
    journal.on('ingest-failed', (err: unknown) => void this.journalFailure(err, { op: 'none' }));
    // Nothing is lost: fdatasyncs go on flushing their files too, and the next one asks again.
    journal.on('checkpoint-failed', (err: unknown) => this.opts.log.warn({ err }, 'checkpoint: syncing the mirrored tree failed'));
  }

  /** Captured writes count toward --max-backlog too: at the cap they come back here, where writers wait. */
  private captured(bytes: number): void {
    if (!this.opts.maxBacklogBytes || (this.bytesSinceCheck += bytes) < 2 ** 20) return;
    this.checkBacklog();
  }

  /** A file in an open transaction as the transaction found it (see CommittedView). */
  committedView(p: string): CommittedView | undefined {
    return this.txns.committedView(p);
  }

  /**
   * Whether the policy mirrors `p`. Decided by name (cached); only a path whose name the policy does not mirror
   * is looked at further: a directory (in unless excluded) or a record file (the records class).
   */
  mirrored(p: string, kind?: 'dir' | 'file'): boolean {
    const policy = this.opts.policy;
    if (policy.mirrorsAll || policy.place(p, false).mirrored) return true;
    if (!policy.place(p, true).mirrored) return false; // excluded
    const isDir = kind ? kind === 'dir' : isDirectory(this.abs(p));
    return isDir || (this.rules.isRecordFile(p) && policy.placeRecordFile(p).mirrored);
  }

  /** Whether an operation is journaled: its path is mirrored (renames and links decide for themselves). */
  private captures(op: Op): boolean {
    if (this.opts.policy.mirrorsAll) return true;
    switch (op.op) {
      case 'mkdir':
      case 'rmdir':
        return this.mirrored(op.path, 'dir');
      case 'create':
      case 'write':
      case 'truncate':
      case 'symlink':
      case 'unlink':
        return this.mirrored(op.path, 'file');
      case 'rename':
      case 'link':
        return true;
      default:
        return 'path' in op ? this.mirrored(op.path) : true;
    }
  }

  configure(changes: Partial<PassthroughOptions>): void {
    Object.assign(this.opts, changes);
    this.forget();
    this.uncapture();
    this.heldAtCap?.check(); // held writers see the new cap
  }

  /** Runs `fn` with every mutation held back, captured writes too. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.serial.run(async () => {
      this.capture?.hold(true);
      try {
        return await fn();
      } finally {
        this.capture?.hold(false);
      }
    });
  }

  private abs(p: string): string {
    return this.root + p;
  }

  /**
   * Runs a mutation in journal order, journal first: the intent is committed before the operation runs, so a
   * crash can never leave a change on disk that the journal lacks (recovery redoes the last entry). A failed
   * operation retracts its entry; `run` may return a final form of the entry with what only the outcome tells.
   * An intent given as a function is made in turn, just before it is journaled; it may refuse the operation
   * (record rules, transactions) by throwing, and nothing is journaled.
   */
  private mutate<T>(intentOf: Op | (() => Op), run: (intent: Op) => Promise<Outcome<T>>, handle?: Handle, intentStamps?: Stamp[]): Promise<T> {
    return this.serial.run(() => this.mutateNow(intentOf, run, handle, intentStamps));
  }

  /** mutate() for a caller that already holds the serializer. An operation outside the policy just runs. */
  private async mutateNow<T>(intentOf: Op | (() => Op), run: (intent: Op) => Promise<Outcome<T>>, handle?: Handle, intentStamps?: Stamp[]): Promise<T> {
    this.mutationSince = Date.now();
    try {
      return await this.mutateTracked(intentOf, run, handle, intentStamps);
    } finally {
      this.mutationSince = 0;
    }
  }

  /**
   * Why the mount is read-only (fenced by a newer primary, or switched over to the other site); undefined while it
   * serves writes. Every mutation is then refused with EROFS, reads go on.
   */
  readOnly: string | undefined;
  private refusedLogged = 0;

  turnReadOnly(reason: string): void {
    this.readOnly = reason;
    this.uncapture();
  }

  /** The native binding's capture of plain writes and names (undefined: every mutation is served here). */
  private capture: Capture | undefined;

  /** Set by mountOver once the binding serves the mount, and cleared at its unmount. */
  attachCapture(capture: Capture | undefined): void {
    this.capture = capture;
    this.serveNames();
  }

  /** How many namespace changes the native binding served (for status). */
  get namesServedNatively(): number {
    return this.capture?.namesChanged() ?? 0;
  }

  /**
   * Namespace changes (create, mkdir, symlink, link, rename, unlink, rmdir) are served natively while nothing here
   * could refuse or redirect one: every name mirrored (no policy edge to cross), no transaction open, writes neither
   * refused nor held at the cap. Creates also need every class to add nothing at creation (a VOS organization to
   * declare, a mode of its own): then a new file's handle mode is the mount's, as handleMode would say.
   */
  private serveNames(): void {
    if (!this.capture) return;
    const { policy, mode } = this.opts;
    const on = policy.mirrorsAll && !this.readOnly && !this.backlogFull && !this.txns.holdsAny;
    const plainCreates = policy.classes.every((c) => !c.organization && (c.sync ?? mode) === mode);
    this.capture.serveNames(on, on && plainCreates ? capturedAs(mode) : HandleMode.js);
  }

  /**
   * The handle `fd` was opened as. A file the native binding created is first seen here once its writes come back
   * to JavaScript (uncapture): its times are journaled at its next flush, as every handle's then, and its release
   * comes here (the binding closes one it created and JavaScript never saw).
   */
  private handle(fd: number): Handle {
    let h = this.handles.get(fd);
    if (!h) {
      this.handles.set(fd, (h = { dirty: true, lastSeq: 0, syncWrites: false }));
      this.capture?.adoptHandle(fd);
    }
    return h;
  }

  /**
   * How a newly opened file's writes are served: captured natively when nothing but order, durability and (sync
   * mode) the backup's acknowledgement is asked of them (a mirrored, plain file); passed through when it is not
   * mirrored; else here.
   */
  private handleMode(p: string, h: Handle): HandleMode {
    if (this.readOnly || this.backlogFull || h.syncWrites) return HandleMode.js;
    if (!this.mirrored(p, 'file')) return HandleMode.plain;
    if (this.rules.isRecordFile(p) || this.txns.txnOf(p)) return HandleMode.js;
    return capturedAs(this.opts.policy.place(p, false).cls.sync ?? this.opts.mode);
  }

  private opened(p: string, fd: number, h: Handle): void {
    this.handles.set(fd, h);
    this.capture?.setHandle(fd, this.handleMode(p, h));
  }

  /**
   * Every open file's writes come back here (a transaction, a record format, a policy edge crossed, read-only, the
   * backlog cap): what decided their mode at open may no longer hold. Times are journaled again at their flush.
   */
  private uncapture(): void {
    if (!this.capture) return;
    this.capture.resetHandles();
    for (const h of this.handles.values()) h.dirty = true;
    this.serveNames();
  }

  private refusedReadOnly(what: string | Op | undefined): Error {
    if (Date.now() - this.refusedLogged > 5000) {
      this.refusedLogged = Date.now();
      const p = typeof what === 'string' ? what : what && 'path' in what ? what.path : undefined;
      this.opts.log.error({ path: p, reason: this.readOnly }, 'write refused: the mount is read-only (EROFS)');
    }
    return fail('read-only', errno.EROFS);
  }

  /** When the running mutation started (0: none): the watchdog's measure of a stuck operation. */
  mutationSince = 0;

  private async mutateTracked<T>(intentOf: Op | (() => Op), run: (intent: Op) => Promise<Outcome<T>>, handle?: Handle, intentStamps?: Stamp[]): Promise<T> {
    // Checked here, inside the serializer: a mutation held back while the mount turned read-only is refused too.
    if (this.readOnly) throw this.refusedReadOnly(typeof intentOf === 'function' ? undefined : intentOf);
    const intent = typeof intentOf === 'function' ? intentOf() : intentOf;
    if (!this.captures(intent)) return (await run(intent)).value;
    await this.roomInBacklog(intent);
    let seq: number;
    try {
      seq = this.journal.begin(intent, intentStamps);
    } catch (err) {
      throw this.journalFailure(err, intent);
    }
    let r: Outcome<T>;
    try {
      r = await run(intent);
    } catch (err) {
      this.journal.retract(seq);
      throw err;
    }
    this.journal.complete(seq, r.final || r.stamps ? { op: r.final ?? intent, stamps: r.stamps } : undefined);
    if (handle) handle.lastSeq = seq;
    return r.value;
  }

  /** Runs a check that may refuse an operation on `p`; a refusal is logged with its reason (the caller sees only errno). */
  private refusable<T>(p: string, check: () => T): T {
    try {
      return check();
    } catch (err) {
      if (err instanceof RecordRuleError || err instanceof TxnError) this.opts.log.warn({ path: p, reason: err.message }, 'operation refused');
      throw err;
    }
  }

  /** A write's intent, once the record rules allow it; inside a transaction its before-image is saved first. */
  private writeIntent(p: string, fd: number, offset: number, data: Buffer): Op {
    return this.refusable(p, () => {
      const record = this.rules.write(p, () => fs.fstatSync(fd).size, offset, data);
      const txn = this.txns.txnOf(p);
      if (txn) this.txns.saveBefore(txn, p, offset, data.length);
      return { op: 'write', path: p, offset, data, ...(record && { record }), ...(txn && { txn }) };
    });
  }

  private truncateIntent(p: string, size: number, sizeNow: () => number): Op {
    return this.refusable(p, () => {
      const record = this.rules.truncate(p, sizeNow, size);
      const txn = this.txns.txnOf(p);
      if (txn) this.txns.saveBefore(txn, p, size, 0);
      return { op: 'truncate', path: p, size, ...(record && { record }), ...(txn && { txn }) };
    });
  }

  /** Names change: a file held by an open transaction cannot move or go away; cached record formats are dropped. */
  private namespaceIntent(op: Op, ...held: string[]): () => Op {
    return () => {
      for (const p of held) {
        this.refusable(p, () => {
          if (this.txns.holds(p)) throw new TxnError(`${p} is held by an open transaction`, -errno.EBUSY);
        });
      }
      this.forget();
      return op;
    };
  }

  /** Set while writers are held at the cap: `drained` resolves once the backlog is under 90% of it; `check` sees. */
  private heldAtCap: { drained: Promise<void>; check: () => void } | undefined;

  get backlogFull(): boolean {
    return this.heldAtCap !== undefined;
  }
  private mutationsSinceCheck = 0;
  private bytesSinceCheck = 0;

  /**
   * The --max-backlog policy: when the unapplied journal reaches the cap, writers wait (never silent loss) until
   * the backup has brought it under 90% of the cap. Measured every 64 mutations or 1 MiB of data: lmdb's page
   * count is cheap but not free.
   */
  private async roomInBacklog(intent: Op): Promise<void> {
    if (!this.opts.maxBacklogBytes) return;
    this.bytesSinceCheck += intent.op === 'write' ? intent.data.length : 0;
    if (++this.mutationsSinceCheck >= 64 || this.bytesSinceCheck >= 2 ** 20) this.checkBacklog();
    if (this.heldAtCap) await this.heldAtCap.drained;
  }

  /**
   * Holds writers when the backlog is at the cap. Reached from captured writes too: the native binding's writers may
   * all have finished by then (up to its 16 MiB of entries not yet taken), so the cap is declared here, not by a
   * waiting writer, and every later write comes back to JavaScript to wait.
   */
  private checkBacklog(): void {
    this.mutationsSinceCheck = 0;
    this.bytesSinceCheck = 0;
    const cap = this.opts.maxBacklogBytes;
    if (this.heldAtCap || this.journal.backlogBytes() < cap) return;
    let resolve!: () => void;
    const drained = new Promise<void>((r) => (resolve = r));
    // The cap is read again each time: a reload may have raised or removed it.
    const check = () => {
      const cap = this.opts.maxBacklogBytes;
      if (cap && this.journal.backlogBytes() >= cap * 0.9) return;
      this.journal.off('trimmed', check);
      this.heldAtCap = undefined;
      this.serveNames();
      this.opts.log.warn({ backlogBytes: this.journal.backlogBytes(), cap }, 'backlog under the cap again: writers resume');
      resolve();
    };
    this.journal.on('trimmed', check);
    this.heldAtCap = { drained, check };
    this.uncapture();
    this.opts.log.error({ backlogBytes: this.journal.backlogBytes(), cap }, 'BACKLOG CAP REACHED: writers are held until the backup catches up');
  }

  private lastJournalFailureLog = 0;

  /** The journal cannot take the entry: refuse the operation (nothing was changed) and say why, loudly. */
  private journalFailure(err: unknown, op: Op): Error {
    const e = err as { code?: unknown; message?: string };
    // lmdb-js reports a full disk as a plain I/O error; the filesystem says what it is.
    const free = (() => {
      try {
        const st = fs.statfsSync(this.journal.dir);
        return st.bavail * st.bsize;
      } catch {
        return Infinity;
      }
    })();
    const noSpace = free < 8 * 2 ** 20 || e.code === -30792 || /no space|MAP_FULL/i.test(e.message ?? '');
    if (Date.now() - this.lastJournalFailureLog > 1000) {
      this.lastJournalFailureLog = Date.now();
      this.opts.log.error({ err, path: 'path' in op ? op.path : undefined, state: this.journal.dir },
        noSpace ? 'JOURNAL FULL: the state directory has no space; operations are refused with ENOSPC, nothing unjournaled is written'
          : 'JOURNAL WRITE FAILED: operations are refused with EIO, nothing unjournaled is written');
    }
    return Object.assign(new Error('journal write failed'), { errno: noSpace ? -osConstants.errno.ENOSPC : -osConstants.errno.EIO });
  }

  /** Journals facts that need no operation (times after writes, fsync markers), in order with mutations. */
  private record(op: Op & { path: string }, stampPaths: string[], handle?: Handle): Promise<void> {
    if (this.readOnly || !this.mirrored(op.path)) return Promise.resolve();
    return this.serial.run(async () => {
      const seq = this.journal.append(op, this.stamps(stampPaths));
      if (handle) handle.lastSeq = seq;
    });
  }

  private stamps(paths: string[]): Stamp[] {
    return stampsOf(this.root, paths);
  }

  /** Sync mode has degraded to async after a timeout; it returns once the backlog from then is applied. */
  syncDegraded = false;
  private degradedAt = 0;

  /** Sync mode: wait until the backup has applied `seq` (see onSyncTimeout for when it does not). */
  private async replicated(seq: number, p: string): Promise<void> {
    if ((this.opts.policy.place(p, false).cls.sync ?? this.opts.mode) !== 'sync' || !this.mirrored(p)) return;
    if (this.syncDegraded) {
      if (this.journal.ackedSeq < this.degradedAt) return;
      this.syncDegraded = false;
      this.opts.log.warn({ seq: this.journal.ackedSeq }, 'sync mode restored: the backup has caught up');
    }
    try {
      await this.journal.waitAcked(seq, this.opts.syncTimeoutMs);
    } catch {
      if (this.opts.onSyncTimeout === 'degrade') {
        if (!this.syncDegraded) {
          this.syncDegraded = true;
          this.degradedAt = this.journal.lastSeq;
          this.opts.log.error({ path: p, seq }, 'SYNC MODE DEGRADED TO ASYNC: the backup did not acknowledge in time; writes are journaled but not yet on the DR site');
        }
        return;
      }
      this.opts.log.error({ path: p, seq }, 'sync mode: the backup did not acknowledge in time; failing the call with EIO');
      throw Object.assign(new Error('not replicated'), { errno: -5 });
    }
  }

  /** Journals the file's times if it was written through this handle since the last stamp. */
  private async settle(p: string, h: Handle): Promise<void> {
    if (!h.dirty) return;
    h.dirty = false;
    await this.record({ op: 'times', path: p }, [p], h);
  }

  operations() {
    const reply = <T>(cb: Reply, work: Promise<T>, ok: (v: T) => unknown[] = () => []) => {
      work.then((v) => cb(0, ...ok(v)), (err) => cb(errnoOf(err)));
    };
    // Metadata reads and changes run on this thread: a few microseconds in the kernel, less than a trip through
    // libuv's pool (two thread wake-ups), and mutations run one at a time anyway. Safe because they touch the real
    // directory, never the mount.
    const now = <T>(cb: Reply, work: () => T, ok: (v: T) => unknown[]) => {
      let v: T;
      try {
        v = work();
      } catch (err) {
        cb(errnoOf(err));
        return;
      }
      cb(0, ...ok(v));
    };
    const done = <T>(value: T, stampPaths: string[] = [], final?: Op): Outcome<T> => {
      const stamps = this.stamps(stampPaths);
      return { value, stamps: stamps.length ? stamps : undefined, final };
    };
    const a = (p: string) => this.abs(p);
    const ops = {
      getattr: (p: string, cb: Reply) => now(cb, () => fs.lstatSync(a(p), { bigint: true }), (st) => [st]),

      readdir: (p: string, cb: Reply) => reply(cb, fs.promises.readdir(a(p)), (names) => [['.', '..', ...names]]),

      readlink: (p: string, cb: Reply) => reply(cb, fs.promises.readlink(a(p)), (t) => [t]),

      statfs: (_p: string, cb: Reply) =>
        reply(cb, fs.promises.statfs(this.root + '/'), (s) => [
          { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, namemax: 255 },
        ]),

      open: (p: string, flags: number, cb: Reply) => reply(cb, this.open(p, flags), (fd) => [fd]),

      create: (p: string, mode: number, cb: Reply) => reply(cb, this.create(p, mode), (fd) => [fd]),

      read: (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => {
        fs.read(fd, buf, 0, len, pos, (err, n) => cb(err ? errnoOf(err) : n));
      },

      write: (p: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => {
        this.write(p, fd, buf, len, pos).then(cb, (err) => cb(errnoOf(err)));
      },

      flush: (p: string, fd: number, cb: Reply) => reply(cb, this.flush(p, fd)),

      fsync: (p: string, datasync: number, fd: number, cb: Reply) => reply(cb, this.fsync(p, datasync !== 0, fd)),

      release: (_p: string, fd: number, cb: Reply) => {
        this.handles.delete(fd);
        now(cb, () => fs.closeSync(fd), () => []);
      },

      truncate: (p: string, size: number, cb: Reply) =>
        reply(cb, this.mutate(() => this.truncateIntent(p, size, () => fs.statSync(a(p)).size), async () => {
          fs.truncateSync(a(p), size);
          return done(undefined, [p]);
        })),

      ftruncate: (p: string, fd: number, size: number, cb: Reply) =>
        reply(cb, this.mutate(() => this.truncateIntent(p, size, () => fs.fstatSync(fd).size), async () => {
          fs.ftruncateSync(fd, size);
          return done(undefined, [p]);
        }, this.handle(fd))),

      chmod: (p: string, mode: number, cb: Reply) =>
        reply(cb, this.mutate({ op: 'chmod', path: p, mode: mode & 0o7777 }, async () => {
          fs.chmodSync(a(p), mode);
          return done(undefined);
        })),

      chown: (p: string, uid: number, gid: number, cb: Reply) => {
        const [u, g] = [uid === NO_ID ? -1 : uid, gid === NO_ID ? -1 : gid];
        reply(cb, this.mutate({ op: 'chown', path: p, uid: u, gid: g }, async () => {
          fs.lchownSync(a(p), u, g);
          return done(undefined);
        }));
      },

      utimens: (p: string, atime: TimeArg, mtime: TimeArg, cb: Reply) => reply(cb, this.utimens(p, atime, mtime)),

      fallocate: (p: string, fd: number, mode: number, offset: number, length: number, cb: Reply) =>
        reply(cb, this.fallocate(p, fd, mode, offset, length)),

      /** Native binding, sync mode: a captured fsync or close waits here for the backup to apply `seq`. */
      replicated: (p: string, seq: number, cb: Reply) => reply(cb, this.replicated(seq, p)),

      unlink: (p: string, cb: Reply) =>
        reply(cb, this.mutate(this.namespaceIntent({ op: 'unlink', path: p }, p), async () => {
          fs.unlinkSync(a(p));
          return done(undefined, [parentOf(p)]);
        })),

      rmdir: (p: string, cb: Reply) =>
        reply(cb, this.mutate(this.namespaceIntent({ op: 'rmdir', path: p }, p), async () => {
          fs.rmdirSync(a(p));
          return done(undefined, [parentOf(p)]);
        })),

      mkdir: (p: string, mode: number, cb: Reply) =>
        reply(cb, this.mutate({ op: 'mkdir', path: p, mode: mode & 0o7777, uid: -1, gid: -1 }, async () => {
          fs.mkdirSync(a(p), mode);
          const st = fs.lstatSync(a(p), { bigint: true });
          return done(undefined, [parentOf(p), p], { op: 'mkdir', path: p, mode: Number(st.mode) & 0o7777, uid: Number(st.uid), gid: Number(st.gid) });
        })),

      rename: (p: string, to: string, cb: Reply) =>
        reply(cb, this.crossing({ op: 'rename', path: p, to }, async () => {
          fs.renameSync(a(p), a(to));
          return done(undefined, [parentOf(p), parentOf(to), to]);
        })),

      symlink: (target: string, p: string, cb: Reply) =>
        reply(cb, this.mutate({ op: 'symlink', path: p, target, uid: -1, gid: -1 }, async () => {
          fs.symlinkSync(target, a(p));
          const st = fs.lstatSync(a(p), { bigint: true });
          return done(undefined, [parentOf(p), p], { op: 'symlink', path: p, target, uid: Number(st.uid), gid: Number(st.gid) });
        })),

      link: (p: string, to: string, cb: Reply) =>
        reply(cb, this.crossing({ op: 'link', path: p, to }, async () => {
          fs.linkSync(a(p), a(to));
          return done(undefined, [parentOf(to)]);
        })),

      setxattr: (p: string, name: string, value: Buffer, _position: number, flags: number, cb: Reply) =>
        reply(cb, this.setxattr(p, name, Buffer.from(value), flags)),

      // The kernel asks for security.capability before every write: this must be cheap.
      getxattr: (p: string, name: string, _position: number, cb: Reply) => now(cb, () => this.getxattr(p, name), (v) => [v]),

      listxattr: (p: string, cb: Reply) => now(cb, () => listAttributesSync(a(p)), (names) => [names]),

      removexattr: (p: string, name: string, cb: Reply) =>
        reply(cb, this.declaring(p, name, () => this.mutateNow(() => this.refusable(p, () => {
          if (name.startsWith(RESERVED_XATTRS)) throw new TxnError(`${name} is reserved by drms`, -errno.ENOTSUP);
          this.forget(p);
          return { op: 'removexattr', path: p, name };
        }), async () => {
          removeAttributeSync(a(p), name);
          return done(undefined);
        }))),
    };
    return ops;
  }

  /**
   * Creates a file. The owner is unknown until it exists: the intent says "leave it" (-1), the final entry has it.
   * A file of a class with a VOS organization gets its user.vos.* attributes at once; a critical file is an event.
   */
  private create(p: string, mode: number): Promise<number> {
    const a = (x: string) => this.abs(x);
    return this.serial.run(async () => {
      let fd: number;
      try {
        fd = await this.mutateNow<number>({ op: 'create', path: p, mode: mode & 0o7777, uid: -1, gid: -1 }, async () => {
          this.forget(p);
          const fd = fs.openSync(a(p), C.O_CREAT | C.O_EXCL | C.O_RDWR, mode);
          this.rules.created(p);
          this.opened(p, fd, { dirty: false, lastSeq: 0, syncWrites: false });
          const st = fs.fstatSync(fd, { bigint: true });
          const stamps = [...this.stamps([parentOf(p)]), stampOf(p, st)];
          return { value: fd, stamps, final: { op: 'create', path: p, mode: Number(st.mode) & 0o7777, uid: Number(st.uid), gid: Number(st.gid) } };
        });
      } catch (err) {
        // The kernel holds the directory's lock from its lookup to this create, so the name is new unless a program
        // made it beneath the mount meanwhile: then this is an open (the create's entry was retracted), as it would
        // have been on ext4. Journaling a create would empty the backup's copy.
        if (codeOf(err) !== 'EEXIST') throw err;
        const existing = fs.openSync(a(p), C.O_RDWR | C.O_NOFOLLOW);
        this.opened(p, existing, { dirty: false, lastSeq: 0, syncWrites: false });
        return existing;
      }
      const { cls } = this.opts.policy.place(p, false);
      if (cls.organization && fs.fstatSync(fd).size === 0) {
        this.capture?.setHandle(fd, HandleMode.js); // a record file: its writes follow the record rules
        const attrs: Array<[string, string]> = [[XATTR_ORGANIZATION, cls.organization]];
        if (cls.recordSize) attrs.push([XATTR_RECORD_SIZE, String(cls.recordSize)]);
        for (const [name, value] of attrs) {
          await this.mutateNow({ op: 'setxattr', path: p, name, value: Buffer.from(value) }, async () => {
            setAttributeSync(a(p), name, value);
            this.forget(p);
            return { value: undefined };
          });
        }
      }
      this.detectCreated(p);
      return fd;
    });
  }

  /** A new file: a critical one is an event (created here, or natively and seen when its entry is taken in). */
  private detectCreated(p: string): void {
    const { cls } = this.opts.policy.place(p, false);
    if (cls !== this.opts.policy.other && this.mirrored(p, 'file')) this.opts.events.emit('detected', 'critical file detected', { path: p, class: cls.name, how: 'created' });
  }

  /**
   * A rename or link, which may carry a file across the policy's edge: in to in is journaled as it is; in to out
   * removes the old name from the backup; out to in copies the file (or tree) to the backup whole. A directory
   * renamed within the policy is re-examined below when the policy names paths (a file may change sides).
   */
  private crossing(op: Op & { op: 'rename' | 'link'; to: string }, run: (intent: Op) => Promise<Outcome<void>>): Promise<void> {
    const held = op.op === 'rename' ? [op.path, op.to] : [op.path];
    if (this.opts.policy.mirrorsAll) return this.mutate(this.namespaceIntent(op, ...held), run);
    return this.serial.run(async () => {
      const st = lstatQuietly(this.abs(op.path));
      const kind = st?.isDirectory() ? 'dir' : 'file';
      const from = this.mirrored(op.path, kind);
      const was = (to: string) => op.path + to.slice(op.to.length);
      // A record file keeps its organization under the new name.
      const into = this.mirroredAfterMove(op.to, kind, from && kind === 'file' && this.rules.isRecordFile(op.path));
      const replaced = op.to !== op.path && lstatQuietly(this.abs(op.to)) !== undefined && this.mirrored(op.to);
      const intent = this.namespaceIntent(op, ...held);
      if (from && into) {
        await this.mutateNow(intent, run);
        if (op.op === 'rename' && kind === 'dir' && this.opts.policy.dependsOnDirectories) await this.reconsider(op.to, was);
        return;
      }
      const cached = intent(); // refusals (an open transaction) apply on either side
      this.uncapture();
      await run(cached);
      if (replaced && !into) this.journal.append({ op: 'remove', path: op.to });
      if (op.op === 'rename' && from && !into) {
        this.journal.append({ op: 'remove', path: op.path });
        this.opts.events.emit('left-policy', 'file left the mirrored set (renamed out of the policy)', { path: op.path, to: op.to });
      } else if (!from && into) {
        await this.copier.copy(op.to, {}, true);
        this.opts.events.emit('detected', 'critical file detected', { path: op.to, class: this.opts.policy.place(op.to, kind === 'dir').cls.name, how: op.op === 'rename' ? 'renamed-in' : 'linked-in' });
      }
    });
  }

  /** Whether `p` is mirrored once a file of `kind` has moved there (the name decides, or the records class). */
  private mirroredAfterMove(p: string, kind: 'dir' | 'file', recordFile: boolean): boolean {
    const policy = this.opts.policy;
    if (kind === 'dir') return policy.place(p, true).mirrored;
    return policy.place(p, false).mirrored || (recordFile && policy.placeRecordFile(p).mirrored);
  }

  /** After a directory moved within the policy: files below it that changed sides are copied or removed. */
  private async reconsider(dir: string, was: (p: string) => string): Promise<void> {
    for (const name of await fs.promises.readdir(this.abs(dir)).catch(() => [] as string[])) {
      const p = path.posix.join(dir, name);
      const isDir = isDirectory(this.abs(p));
      const before = isDir ? this.opts.policy.place(was(p), true).mirrored : this.mirroredAfterMove(was(p), 'file', this.rules.isRecordFile(p));
      const now = this.mirrored(p, isDir ? 'dir' : 'file');
      if (before && !now) this.journal.append({ op: 'remove', path: p });
      else if (!before && now) await this.copier.copy(p, {}, true);
      else if (isDir && now) await this.reconsider(p, was);
    }
  }

  /**
   * Setting or removing a VOS organization can move a file into the records class or out of it: the backup
   * gets the whole file, or loses it.
   */
  private declaring(p: string, name: string, change: () => Promise<void>): Promise<void> {
    if (name === XATTR_ORGANIZATION || name === XATTR_RECORD_SIZE) this.uncapture(); // record rules apply from now
    if (name !== XATTR_ORGANIZATION || this.opts.policy.mirrorsAll) return this.serial.run(change);
    return this.serial.run(async () => {
      const before = this.mirrored(p);
      await change();
      this.forget(p);
      const after = this.mirrored(p);
      if (!before && after) {
        await this.copier.copy(p);
        this.opts.events.emit('detected', 'critical file detected', { path: p, class: 'records', how: 'declared' });
      } else if (before && !after) {
        this.journal.append({ op: 'remove', path: p });
        this.opts.events.emit('left-policy', 'file left the mirrored set (no longer a record file)', { path: p });
      }
    });
  }

  private async open(p: string, flags: number): Promise<number> {
    if (this.readOnly && ((flags & O_ACCMODE) !== C.O_RDONLY || (flags & C.O_TRUNC) !== 0)) throw this.refusedReadOnly(p);
    // The kernel computes append offsets; the journal must record where bytes really landed.
    const truncates = (flags & C.O_TRUNC) !== 0;
    const fd = fs.openSync(this.abs(p), flags & ~(C.O_APPEND | C.O_TRUNC | C.O_CREAT | C.O_EXCL));
    const h: Handle = { dirty: false, lastSeq: 0, syncWrites: (flags & (C.O_SYNC | C.O_DSYNC)) !== 0 };
    this.opened(p, fd, h);
    if (truncates) {
      await this.mutate(() => this.truncateIntent(p, 0, () => fs.fstatSync(fd).size), async () => {
        fs.ftruncateSync(fd, 0);
        return { value: undefined, stamps: this.stamps([p]) };
      }, h);
    }
    return fd;
  }

  private async write(p: string, fd: number, buf: Buffer, len: number, pos: number): Promise<number> {
    const h = this.handle(fd);
    const n = await this.mutate(() => this.writeIntent(p, fd, pos, buf.subarray(0, len)), async (intent) => {
      // Mutations run one at a time anyway; a buffered pwrite costs less here than a trip through the pool.
      const written = fs.writeSync(fd, buf, 0, len, pos);
      h.dirty = true;
      return { value: written, final: written < len ? { ...intent, data: buf.subarray(0, written) } as Op : undefined };
    }, h);
    if (h.syncWrites) {
      await this.journal.flushed();
      await this.replicated(h.lastSeq, p);
    }
    return n;
  }

  private async flush(p: string, fd: number): Promise<void> {
    const h = this.handle(fd);
    const wrote = h.dirty;
    await this.settle(p, h);
    if (wrote) await this.replicated(h.lastSeq, p);
  }

  private async fsync(p: string, datasync: boolean, fd: number): Promise<void> {
    const h = this.handle(fd);
    await this.settle(p, h);
    await this.record({ op: 'fsync', path: p }, [], h);
    // Read-only (fenced, switched over): the journal may be closed, and nothing of this file is journaled anymore.
    const journaled = this.mirrored(p) && !this.readOnly;
    // The file and the journal flush together, so the device can merge the two.
    await Promise.all([
      new Promise<void>((res, rej) => (datasync ? fs.fdatasync : fs.fsync)(fd, (e) => (e ? rej(e) : res()))),
      journaled ? this.journal.flushed() : undefined,
    ]);
    if (journaled) await this.replicated(h.lastSeq, p);
  }

  /** The intent carries the times asked for (resolved), so a redo after a crash sets the same. */
  private async utimens(p: string, atime: TimeArg, mtime: TimeArg): Promise<void> {
    const current = atime === 'omit' || mtime === 'omit' ? fs.lstatSync(this.abs(p), { bigint: true }) : undefined;
    const resolve = (v: TimeArg, currentNs: bigint | undefined): Timestamp => {
      if (v === 'now') return nsToTimestamp(BigInt(Date.now()) * 1_000_000n);
      if (v === 'omit') return nsToTimestamp(currentNs!);
      return v;
    };
    const [at, mt] = [resolve(atime, current?.atimeNs), resolve(mtime, current?.mtimeNs)];
    const intent: Op = { op: 'times', path: p };
    await this.mutate(intent, async () => {
      setTimes(this.abs(p), at, mt);
      return { value: undefined, stamps: this.stamps([p]) };
    }, undefined, [[p, at, mt]]);
  }

  /**
   * fallocate (native binding). The backup gets its visible effect: a longer file (a truncate entry), or zeros
   * (a write entry), or only new times (blocks reserved). Ranges that move data are not offered.
   */
  private fallocate(p: string, fd: number, mode: number, offset: number, length: number): Promise<void> {
    if (mode & ~(FALLOC_KEEP_SIZE | FALLOC_PUNCH_HOLE | FALLOC_ZERO_RANGE)) return Promise.reject(fail('fallocate mode not supported', errno.EOPNOTSUPP));
    const allocate = async (): Promise<Outcome<void>> => {
      nativeAddon().fallocate(fd, mode, offset, length);
      return { value: undefined, stamps: this.stamps([p]) };
    };
    const h = this.handle(fd);
    if (mode & (FALLOC_PUNCH_HOLE | FALLOC_ZERO_RANGE)) {
      if (length > MAX_ZEROED) return Promise.reject(fail('range too large to mirror as zeros', errno.EOPNOTSUPP));
      return this.mutate(() => {
        const size = fs.fstatSync(fd).size;
        const end = mode & FALLOC_KEEP_SIZE ? Math.min(offset + length, size) : offset + length;
        return this.writeIntent(p, fd, offset, Buffer.alloc(Math.max(0, end - offset)));
      }, allocate, h);
    }
    // Reserving blocks changes no content, but the file's times.
    if (mode & FALLOC_KEEP_SIZE) return this.mutate({ op: 'times', path: p }, allocate, h);
    return this.mutate(() => this.truncateIntent(p, Math.max(offset + length, fs.fstatSync(fd).size), () => fs.fstatSync(fd).size), allocate, h);
  }

  /** Drops what is cached about `p` (or about every path, when names change). */
  private forget(p?: string): void {
    this.rules.forget(p);
    if (p === undefined) this.noCapability.clear();
    else this.noCapability.delete(p);
  }

  private getxattr(p: string, name: string): Buffer {
    if (name === CAPABILITY) {
      if (this.noCapability.has(p)) throw fail('no such attribute', errno.ENODATA);
      try {
        return getAttributeSync(this.abs(p), name);
      } catch (err) {
        if (codeOf(err) === 'ENODATA') this.noCapability.add(p);
        throw err;
      }
    }
    if (name === XATTR_TXN) {
      const txn = this.txns.txnOf(p);
      if (!txn) throw fail('not in a transaction', errno.ENODATA);
      return Buffer.from(txn);
    }
    return getAttributeSync(this.abs(p), name);
  }

  private setxattr(p: string, name: string, value: Buffer, flags: number): Promise<void> {
    if (name === XATTR_TXN) return this.transaction(p, value);
    const intent = () => this.refusable(p, (): Op => {
      if (name.startsWith(RESERVED_XATTRS)) throw new TxnError(`${name} is reserved by drms`, -errno.ENOTSUP);
      this.rules.setAttribute(p, name, value);
      this.forget(p);
      return { op: 'setxattr', path: p, name, value };
    });
    return this.declaring(p, name, () => this.mutateNow(intent, async () => {
      if (flags & (XATTR_CREATE | XATTR_REPLACE)) {
        let exists = true;
        try {
          getAttributeSync(this.abs(p), name);
        } catch {
          exists = false;
        }
        if (flags & XATTR_CREATE && exists) throw Object.assign(new Error('exists'), { errno: -osConstants.errno.EEXIST });
        if (flags & XATTR_REPLACE && !exists) throw Object.assign(new Error('no such attribute'), { errno: -osConstants.errno.ENODATA });
      }
      setAttributeSync(this.abs(p), name, value);
      return { value: undefined };
    }));
  }

  /**
   * user.drms.txn = begin:ID adds the file to transaction ID; commit:ID or abort:ID (on any of its files) ends it.
   * A commit makes the files durable and journals one commit entry; in sync mode it returns once the backup has
   * it. An abort restores the before-images and journals an abort entry, so the backup drops what it staged.
   */
  private async transaction(p: string, value: Buffer): Promise<void> {
    const ctl = this.refusable(p, () => parseTxnControl(value));
    const seq = await this.serial.run(() => this.control(p, ctl));
    if (seq === undefined) return;
    await this.journal.flushed();
    await this.replicated(seq, p);
  }

  private async control(p: string, { action, id }: TxnControl): Promise<number | undefined> {
    if (action === 'begin') {
      // Before the file is held: no rename or unlink of it may be running natively then.
      this.capture?.serveNames(false, HandleMode.js);
      try {
        this.refusable(p, () => this.txns.begin(id, p));
      } finally {
        this.uncapture();
      }
      this.opts.log.info({ txn: id, path: p }, 'transaction: file joined');
      return undefined;
    }
    const paths = this.refusable(p, () => {
      if (this.txns.txnOf(p) !== id) throw new TxnError(`${p} is not in transaction ${id}`, -errno.EINVAL);
      return this.txns.paths(id);
    });
    const mirrored = paths.filter((f) => this.mirrored(f));
    if (action === 'commit') {
      // The files are durable before the commit is journaled (in parallel, on libuv's pool).
      await Promise.all(paths.map(async (f) => {
        const fh = await fs.promises.open(this.abs(f), C.O_RDONLY | C.O_NOFOLLOW);
        try {
          await fh.datasync();
        } finally {
          await fh.close();
        }
      }));
    } else {
      for (const f of this.txns.rollback(id)) this.capture?.dropCache(f);
    }
    const seq = this.journal.appendWith(action === 'commit' ? { op: 'txn-commit', txn: id, paths: mirrored } : { op: 'txn-abort', txn: id },
      this.stamps(mirrored), () => this.txns.end(id));
    this.serveNames();
    this.opts.log.info({ txn: id, paths, seq }, action === 'commit' ? 'transaction committed' : 'transaction aborted: before-images restored');
    return seq;
  }
}

/** The mode of a handle captured natively in replication mode `mode`: sync mode's fsync and close wait for the backup. */
function capturedAs(mode: SyncMode): HandleMode {
  return mode === 'sync' ? HandleMode.sync : HandleMode.capture;
}

function isDirectory(abs: string): boolean {
  try {
    return fs.lstatSync(abs).isDirectory();
  } catch {
    return false;
  }
}

function parentOf(p: string): string {
  return path.posix.dirname(p);
}

