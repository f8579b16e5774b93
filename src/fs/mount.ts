// Mounts the passthrough over a directory itself, so applications keep their paths; and takes it down.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { ConfigError } from '../errors.js';
import type { Journal } from '../journal/journal.js';
import type { Logger } from '../log.js';
import type { Committed } from '../vos/committed.js';
import { enableFuseIoUring, FS_NAME, serve, type BindingOptions } from './binding.js';
import { Passthrough, type PassthroughOptions } from './passthrough.js';

const run = promisify(execFile);

export interface Mounted {
  readonly dir: string;
  /** The real directory under the mount, reachable without going through it (append a path starting with '/'). */
  readonly root: string;
  /** Sync mode has degraded to async (see PassthroughOptions.onSyncTimeout). */
  readonly syncDegraded: boolean;
  /** Writers are held at the --max-backlog cap. */
  readonly backlogFull: boolean;
  /** io_uring entries that have served the mount's requests (0: all came through /dev/fuse). */
  readonly ringEntries: number;
  /** Namespace changes the native binding journaled and served itself (0: all were JavaScript's). */
  readonly namesServedNatively: number;
  /** Runs `fn` with every mutation held back, e.g. to journal a consistent copy of a file. */
  exclusive<T>(fn: () => Promise<T>): Promise<T>;
  /** New replication settings or policy (configuration reload); mutations already running keep the old. */
  configure(changes: Pick<PassthroughOptions, 'mode' | 'syncTimeoutMs' | 'onSyncTimeout' | 'maxBacklogBytes' | 'policy'>): void;
  /** Seconds the running mutation has taken so far (0 when none runs). */
  readonly operationSeconds: number;
  /** Whether the policy mirrors a path. */
  mirrored(p: string, kind?: 'dir' | 'file'): boolean;
  /** A file in an open transaction as the transaction found it: what copies and verify read of it. */
  committed: Committed;
  /** From now on every mutation is refused with EROFS (fenced, or switched over); reads go on. */
  readOnly(reason: string): void;
  readonly readOnlyReason: string | undefined;
  unmount(): Promise<void>;
}

/** Finds the fstype of a mount whose mount point is exactly `dir` (from /proc/self/mountinfo). */
function mountTypeAt(dir: string): string | undefined {
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const fields = line.split(' ');
    const sep = fields.indexOf('-');
    if (sep > 4 && unescapeMount(fields[4]!) === dir) return fields[sep + 1];
  }
  return undefined;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * Uncovers `dir` if a crashed drms left its dead mount there (ENOTCONN); refuses a live mount or any other FUSE
 * mount. Returns the real path.
 */
async function detachStale(dirArg: string, log: Logger): Promise<string> {
  // Not realpath: on a dead mount it fails with ENOTCONN.
  const dir = path.resolve(dirArg);
  const existing = mountTypeAt(dir);
  if (existing === `fuse.${FS_NAME}`) {
    if (isAlive(dir)) throw new ConfigError(`${dir} is already mounted by a running drms; stop it first`, { path: dir });
    log.warn({ path: dir }, 'detaching a dead drms mount left by an earlier run');
    await run('fusermount', ['-uz', dir]);
  } else if (existing?.startsWith('fuse')) {
    throw new ConfigError(`${dir} is already a FUSE mount (${existing}); unmount it first`, { path: dir });
  }
  const real = fs.realpathSync(dir);
  if (!fs.statSync(real).isDirectory()) throw new ConfigError(`--mount ${real} is not a directory`, { path: real });
  return real;
}

/**
 * A FUSE mount whose server is gone answers ENOTCONN. statfs, not stat: the kernel may answer stat from its
 * attribute cache for a second after the server died. (Never call this on a mount this process serves.)
 */
function isAlive(dir: string): boolean {
  try {
    fs.statfsSync(dir);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ENOTCONN';
  }
}

/**
 * Mounts over `dir`, detaching a dead drms mount first. `beforeServe` runs on the real directory between the
 * detach and the new mount: keep it short, since writes to the directory in that window are not captured.
 */
export async function mountOver(
  dirArg: string,
  journal: Journal,
  opts: PassthroughOptions & BindingOptions,
  beforeServe: (root: string) => Promise<void> = async () => undefined,
): Promise<Mounted> {
  const dir = await detachStale(dirArg, opts.log);
  // Keep a handle on the real directory before covering it: all pass-through I/O goes via this fd.
  const dirFd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  const root = `/proc/self/fd/${dirFd}`;
  await beforeServe(root);
  const passthrough = new Passthrough(root, journal, opts);
  // The native binding journals plain writes itself, taking seqs in the journal's order. Its entries are taken in
  // batches, a few milliseconds apart: one wake-up and one lmdb commit for many (lastSeq and flushes take them at
  // once when they need them).
  const onCaptured = () => journal.ingestSoon();
  const capture = opts.binding === 'native' && journal.captureLogs ? { ...journal.captureLogs, nextSeq: journal.lastSeq + 1, onCaptured } : undefined;
  if (opts.binding === 'native' && opts.ioUring) {
    const uring = enableFuseIoUring();
    if (uring !== 'on') opts.log.info({ path: dir, fuseIoUring: uring }, uring === 'turned on' ? 'FUSE over io_uring turned on (fuse.enable_uring=Y)' : 'FUSE over io_uring unavailable: requests go through /dev/fuse');
  }
  const session = await serve(dir, dirFd, passthrough.operations(), { ...opts, capture });
  journal.attach(session.capture?.sequencer);
  passthrough.attachCapture(session.capture);
  let down = false;
  return {
    dir,
    root,
    exclusive: (fn) => passthrough.exclusive(fn),
    mirrored: (p, kind) => passthrough.mirrored(p, kind),
    committed: (p) => passthrough.committedView(p),
    configure: (changes) => passthrough.configure(changes),
    readOnly: (reason) => passthrough.turnReadOnly(reason),
    get readOnlyReason() {
      return passthrough.readOnly;
    },
    get syncDegraded() {
      return passthrough.syncDegraded;
    },
    get operationSeconds() {
      return passthrough.mutationSince ? (Date.now() - passthrough.mutationSince) / 1000 : 0;
    },
    get backlogFull() {
      return passthrough.backlogFull;
    },
    get ringEntries() {
      return session.ringEntries();
    },
    get namesServedNatively() {
      return passthrough.namesServedNatively;
    },
    async unmount() {
      if (down) return;
      down = true;
      await session.unmount((settled) => journal.attach(undefined, settled));
      passthrough.attachCapture(undefined);
      fs.closeSync(dirFd);
    },
  };
}
