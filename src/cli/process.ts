// Process plumbing shared by the daemons: state dir, the JavaScript thread's priority and signal handling.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';

export function prepareStateDir(dir: string): string {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (err) {
    throw new ConfigError(`--state ${dir} is not a writable directory: ${(err as Error).message}`, { path: dir });
  }
  return fs.realpathSync(path.resolve(dir));
}

/**
 * Puts this JavaScript thread (it ships on the primary, applies on the backup) at `nice`. Linux keeps a nice value
 * per thread, and threads started later inherit it: called once the FUSE, libuv and lmdb threads run, they keep
 * theirs. Ahead of writers that hold every CPU, shipping and acknowledging no longer wait for their time slices
 * (the replication lag: docs/performance-log.md). Where it is not allowed (not root, no CAP_SYS_NICE), a warning.
 */
export function setThreadNice(nice: number, log: Logger): void {
  try {
    os.setPriority(nice);
  } catch (err) {
    log.warn({ err, nice, thread: 'javascript' }, 'cannot set the priority of the JavaScript thread; it keeps its own');
  }
}

/** On SIGTERM or SIGINT, runs `stop` once and exits 0 (1 if it throws). A second signal exits at once. */
export function onShutdown(log: Logger, stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'shutting down');
    stop().then(
      () => {
        log.info('stopped');
        process.exit(0);
      },
      (err) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}
