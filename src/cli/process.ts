// Process plumbing shared by the daemons: state dir and signal handling.
import fs from 'node:fs';
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
