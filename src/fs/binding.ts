// The FUSE bindings a mount can be served with, behind one interface: drms's own libfuse3 addon (native/), which
// answers reads and lookups on libfuse's threads and journals plain writes and namespace changes there (capture),
// and fuse-native (libfuse2), where every request crosses into JS.
import Fuse from 'fuse-native';
import fs from 'node:fs';
import { ConfigError } from '../errors.js';
import type { CaptureLogs, Sequencer } from '../journal/capture-log.js';
import { nativeAddon } from './native.js';
import type { Operations, TimeArg } from './passthrough.js';

export const BINDINGS = ['native', 'fuse-native'] as const;
export type BindingName = (typeof BINDINGS)[number];
/** The default binding (the faster one, per `npm run bench`); DRMS_BINDING overrides it for a whole test run. */
export const DEFAULT_BINDING: BindingName = process.env.DRMS_BINDING === 'fuse-native' ? 'fuse-native' : 'native';

export interface BindingOptions {
  binding: BindingName;
  /** Native only: the kernel buffers small writes and sends them in large ones (capture at flush, fsync, close). */
  writebackCache: boolean;
  /** Native only: requests are served over io_uring when the kernel offers it (see enableFuseIoUring). */
  ioUring: boolean;
}

/**
 * How a file handle's writes are served (native binding with capture): in JS, captured natively, passed through, or
 * captured natively with fsync and close waiting for the backup (sync mode; `replicated` in JS).
 */
export const HandleMode = { js: 0, capture: 1, plain: 2, sync: 3 } as const;
export type HandleMode = (typeof HandleMode)[keyof typeof HandleMode];

/** The native binding's capture, for the journal (its Sequencer) and the passthrough (handle modes). */
export interface Capture {
  readonly sequencer: Sequencer;
  setHandle(fh: number, mode: HandleMode): void;
  /** JavaScript took over a handle created natively (its writes came back here): its release comes here too. */
  adoptHandle(fh: number): void;
  /** Every handle back to JS (read-only, policy change, a transaction, the backlog cap). */
  resetHandles(): void;
  /**
   * Namespace changes (mkdir, symlink, link, rename, unlink, rmdir) are journaled and served natively (on) or here:
   * natively only while nothing here could refuse or redirect one (a transaction, the policy's edges, read-only, the
   * backlog cap). Creates too, unless `creates` is HandleMode.js; else the new files' handles get that mode.
   */
  serveNames(on: boolean, creates: HandleMode): void;
  /** How many namespace changes were served natively: caches by path are stale once it moves. */
  namesChanged(): number;
  /** Captured writes wait (counted) while every mutation must. */
  hold(on: boolean): void;
  /** The kernel forgets a file's cached pages and attributes: it was changed beneath the mount (a rollback). */
  dropCache(path: string): void;
}

export interface CaptureOptions extends CaptureLogs {
  nextSeq: number;
  onCaptured: () => void;
}

export interface FuseSession {
  /** Present when the native binding captures writes. */
  readonly capture?: Capture;
  /**
   * Stops serving; `beforeRelease` runs once no request is in flight (take the last captured entries, detach the
   * journal). `settled`: every captured write is in its file, so the journal may empty the capture log.
   */
  unmount(beforeRelease?: (settled: boolean) => void): Promise<void>;
  /** io_uring entries that have served requests (0: every request came through /dev/fuse). */
  ringEntries(): number;
}

/** The mount's fsname and subtype: /proc/self/mountinfo shows it as fuse.drms. */
export const FS_NAME = 'drms';
/** Largest write request the native binding asks the kernel for. */
const MAX_WRITE = 1024 * 1024;

const FUSE_URING_PARAM = '/sys/module/fuse/parameters/enable_uring';

/**
 * FUSE over io_uring (Linux 6.14+) is off until the kernel's fuse.enable_uring is set; it lets a FUSE server ask
 * for it at INIT, so servers that do not ask are unaffected. drms sets it (as root) and says what it found.
 */
export function enableFuseIoUring(): string {
  try {
    if (fs.readFileSync(FUSE_URING_PARAM, 'utf8').trim() === 'Y') return 'on';
    fs.writeFileSync(FUSE_URING_PARAM, 'Y');
    return 'turned on';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'unavailable: this kernel has no FUSE over io_uring' : `unavailable: ${FUSE_URING_PARAM}: ${code}`;
  }
}

export function parseBinding(v: string | undefined): BindingName {
  const b = v ?? DEFAULT_BINDING;
  if (!(BINDINGS as readonly string[]).includes(b)) throw new ConfigError(`--binding must be ${BINDINGS.join(' or ')}, not "${b}"`);
  return b as BindingName;
}

/** Serves `ops` over `dir`; `rootFd` is the directory under it, opened before mounting. */
export async function serve(dir: string, rootFd: number, ops: Operations, opts: BindingOptions & { capture?: CaptureOptions }): Promise<FuseSession> {
  if (opts.binding === 'native') {
    const a = nativeAddon();
    const session = a.mount(dir, rootFd, ops, { writeback: opts.writebackCache, ioUring: opts.ioUring, maxWrite: MAX_WRITE, fsname: FS_NAME, capture: opts.capture });
    const capture: Capture | undefined = opts.capture && {
      sequencer: {
        reserve: () => a.reserve(session),
        unreserve: (seq) => a.unreserve(session, seq),
        logFrame: (kind, seq, body) => a.logFrame(session, kind, seq, body),
        take: () => a.take(session),
        giveBack: (part) => a.giveBack(part),
        rotate: () => a.rotate(session),
        checkpoint: () => a.checkpoint(session, true),
        wantsCheckpoint: () => a.wantsCheckpoint(session),
        logBytes: () => a.logBytes(session),
      },
      setHandle: (fh, mode) => a.setHandle(session, fh, mode),
      adoptHandle: (fh) => a.adoptHandle(session, fh),
      resetHandles: () => a.resetHandles(session),
      serveNames: (on, creates) => a.serveNames(session, on, creates),
      namesChanged: () => a.namesChanged(session),
      hold: (on) => a.hold(session, on),
      dropCache: (p) => a.dropCache(session, p),
    };
    // Asked by status at any time, also once the session is released: the last count then.
    let released = false;
    let ringEntries = 0;
    return {
      capture,
      ringEntries: () => (released ? ringEntries : (ringEntries = a.ringEntries(session))),
      async unmount(beforeRelease) {
        await a.unmount(session);
        // Writes answered by the capture log alone reach their files before the journal may empty it. Nothing is
        // logged: a journal closed before the unmount (a switchover) has closed the logs already.
        const settled = !capture || (await a.checkpoint(session, false).then(() => true, () => false));
        try {
          beforeRelease?.(settled);
        } finally {
          ringEntries = a.ringEntries(session);
          released = true;
          a.release(session);
        }
      },
    };
  }
  if (opts.writebackCache) throw new ConfigError('--writeback-cache needs --binding native (libfuse2 has no writeback cache)');
  const fuse = new Fuse(dir, fuseNativeOps(ops), {
    allowOther: true,
    defaultPermissions: true,
    timeout: false,
    // fuse-native has no switch for these; its fsname is passed to libfuse unescaped. attr_timeout=0: a cached
    // attribute of one hard-link name would outlive a chmod through another (getattr here is a cheap lstat).
    fsname: `${FS_NAME},nonempty,big_writes,max_write=131072,use_ino,attr_timeout=0`,
    subtype: FS_NAME,
  });
  await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())));
  return {
    unmount: () => new Promise<void>((resolve, reject) => fuse.unmount((err) => (err ? reject(err) : resolve()))),
    ringEntries: () => 0,
  };
}

/** Sentinels the patched fuse-native uses for UTIME_NOW and UTIME_OMIT (high word 0xFFFFFFFF / 0xFFFFFFFE). */
const UTIME_NOW = 0xffffffff * 2 ** 32;
const UTIME_OMIT = 0xfffffffe * 2 ** 32;

/** fuse-native's forms: times in microseconds (patched), stat objects rather than fs.Stats. */
function fuseNativeOps(ops: Operations): Record<string, (...args: never[]) => void> {
  const time = (us: number): TimeArg => (us === UTIME_NOW ? 'now' : us === UTIME_OMIT ? 'omit' : [Math.floor(us / 1e6), (us % 1e6) * 1000]);
  return {
    ...ops,
    getattr: (p: string, cb: (code: number, st?: object) => void) => ops.getattr(p, (code, st) => cb(code, st ? fuseStat(st as fs.BigIntStats) : undefined)),
    utimens: (p: string, atime: number, mtime: number, cb: (code: number) => void) => ops.utimens(p, time(atime), time(mtime), cb),
  } as unknown as Record<string, (...args: never[]) => void>;
}

/** Stat in the shape fuse-native wants, times in microseconds (the patched binding's unit). */
function fuseStat(st: fs.BigIntStats) {
  return {
    mode: Number(st.mode),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: Number(st.size),
    dev: Number(st.dev),
    nlink: Number(st.nlink),
    ino: Number(st.ino),
    rdev: Number(st.rdev),
    blksize: Number(st.blksize),
    blocks: Number(st.blocks),
    atime: Number(st.atimeNs / 1000n),
    mtime: Number(st.mtimeNs / 1000n),
    ctime: Number(st.ctimeNs / 1000n),
  };
}
