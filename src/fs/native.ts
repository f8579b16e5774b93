// drms's own addon (native/, node-gyp on libfuse3): the native FUSE binding, and the file calls Node lacks.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { codeOf, ConfigError } from '../errors.js';
import type { Timestamp } from '../journal/entry.js';

export interface NativeMountOptions {
  writeback: boolean;
  /** Served over io_uring (per-CPU queues) when the kernel offers it. */
  ioUring: boolean;
  maxWrite: number;
  fsname: string;
  capture?: { logFds: [number, number]; active: number; generation: number; key: bigint; flushFd: number; nextSeq: number; onCaptured: () => void };
}

export interface NativeAddon {
  mount(dir: string, rootFd: number, ops: object, opts: NativeMountOptions): unknown;
  unmount(session: unknown): Promise<void>;
  release(session: unknown): void;
  reserve(session: unknown): number;
  unreserve(session: unknown, seq: number): boolean;
  logFrame(session: unknown, kind: number, seq: number, body?: Buffer): void;
  take(session: unknown): Buffer[] | undefined;
  setHandle(session: unknown, fh: number, mode: number): void;
  adoptHandle(session: unknown, fh: number): void;
  resetHandles(session: unknown): void;
  serveNames(session: unknown, on: boolean, createMode: number): void;
  namesChanged(session: unknown): number;
  hold(session: unknown, on: boolean): void;
  dropCache(session: unknown, path: string): void;
  rotate(session: unknown): Promise<void>;
  logBytes(session: unknown): number;
  checkpoint(session: unknown, logged: boolean): Promise<void>;
  wantsCheckpoint(session: unknown): boolean;
  ringEntries(session: unknown): number;
  fallocate(fd: number, mode: number, offset: number, length: number): void;
  overwriteFlushable(fd: number): boolean;
  flushOverwritten(fd: number, flushFd: number): void;
  openFlushFile(parent: string, dirName: string, name: string): number;
  lutimens(path: string, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): void;
  namesExist(paths: string[]): Promise<Uint8Array>;
  crc32(data: Uint8Array, value?: number): number;
  flushFile(fd: number, data: boolean, lo: number, hi: number, bytes: number): Promise<boolean>;
  giveBack(buffer: Buffer): void;
}

let addon: NativeAddon | undefined;
let loadError: Error | undefined;

/** The addon, built by `npm install` (needs libfuse3-dev); undefined where it was not built. */
export function tryNativeAddon(): NativeAddon | undefined {
  if (addon || loadError) return addon;
  try {
    addon = createRequire(import.meta.url)('../../native/build/Release/drms_fuse.node') as NativeAddon;
  } catch (err) {
    loadError = err as Error;
  }
  return addon;
}

export function nativeAddon(): NativeAddon {
  const a = tryNativeAddon();
  if (a) return a;
  throw new ConfigError(`the native FUSE binding is not built (${loadError!.message.split('\n')[0]}): run npm install (needs libfuse3-dev), or use --binding fuse-native`);
}

/** Sets a path's times (not following a symlink): to the nanosecond with the addon, else to the microsecond. */
export function setTimes(p: string, atime: Timestamp, mtime: Timestamp): void {
  const a = tryNativeAddon();
  if (a) a.lutimens(p, atime[0], atime[1], mtime[0], mtime[1]);
  else fs.lutimesSync(p, seconds(atime), seconds(mtime));
}

/**
 * Which of `paths` name something (or could not be looked up: taken as there), looked up off this thread; with the
 * addon in one trip through libuv's pool for them all, else one each.
 */
export async function namesExist(paths: string[]): Promise<boolean[]> {
  const a = tryNativeAddon();
  if (a) return Array.from(await a.namesExist(paths), (found) => found === 1);
  return Promise.all(paths.map((p) => fs.promises.lstat(p).then(() => true, (err) => codeOf(err) !== 'ENOENT')));
}

/**
 * What writes covered of a file since it was last flushed. Once flushed, their cached pages are given back
 * (native/pages.c says why); without the addon they stay.
 */
export class WrittenSpan {
  private lo = 0;
  private hi = 0;
  private bytes = 0;

  note(offset: number, length: number): void {
    if (this.bytes === 0 || offset < this.lo) this.lo = offset;
    if (this.bytes === 0 || offset + length > this.hi) this.hi = offset + length;
    this.bytes += length;
  }

  /**
   * fdatasync (`data` false: fsync) of `fd`, the file written, off this thread; then the span's pages given back. A
   * span too small yet gathers the writes of the next flushes too.
   */
  async flush(fd: number, data: boolean): Promise<void> {
    const a = tryNativeAddon();
    if (!a) {
      await new Promise<void>((resolve, reject) => (data ? fs.fdatasync : fs.fsync)(fd, (err) => (err ? reject(err) : resolve())));
      this.bytes = 0;
      return;
    }
    const bytes = this.bytes;
    // What was noted while the flush ran stays, within the same bounds: they only ever widen.
    if (await a.flushFile(fd, data, this.lo, this.hi, bytes)) this.bytes = Math.max(0, this.bytes - bytes);
  }
}

/** Makes a file's overwrites durable; for a file whose blocks and size already are. */
export interface OverwriteFlusher {
  flush(): void;
  close(): void;
}

/** The flush files' directory in a state dir: away from the logs' inodes (native/flush.c says why). */
const FLUSH_DIR = 'flush';

/**
 * Opens `<dir>/flush/<name>`, a file never written whose fdatasync flushes the disk's cache (flushOverwritten);
 * with the addon its directory is made in another block group than `dir`'s inodes.
 */
export function openFlushFile(dir: string, name: string): number {
  fs.rmSync(path.join(dir, `${name}.flush`), { force: true }); // where versions before the flush dir kept it
  const a = tryNativeAddon();
  if (a) return a.openFlushFile(dir, FLUSH_DIR, name);
  fs.mkdirSync(path.join(dir, FLUSH_DIR), { recursive: true, mode: 0o700 });
  return fs.openSync(path.join(dir, FLUSH_DIR, name), fs.constants.O_RDONLY | fs.constants.O_CREAT, 0o600);
}

/**
 * With the addon on ext4: the file's pages written out, then the disk's cache flushed through the flush file
 * `name` in `dir` (openFlushFile), which commits nothing in ext4's journal for the file's changed mtime
 * (native/flush.c). Elsewhere fdatasync.
 */
export function overwriteFlusher(fd: number, dir: string, name: string): OverwriteFlusher {
  const a = tryNativeAddon();
  if (!a?.overwriteFlushable(fd)) return { flush: () => fs.fdatasyncSync(fd), close: () => undefined };
  const flushFd = openFlushFile(dir, name);
  return { flush: () => a.flushOverwritten(fd, flushFd), close: () => fs.closeSync(flushFd) };
}

/**
 * Seconds as a float, the form fs.utimes takes. Node truncates it to the microsecond, and the float is a fraction
 * of a microsecond off: half a microsecond added makes that the nearest microsecond.
 */
function seconds([sec, nsec]: Timestamp): number {
  return sec + (nsec + 500) / 1e9;
}
