// `drms primary`: mount over the production directory, journal every mutation, ship to the backup.
import path from 'node:path';
import { writeStatus, readStatus } from '../admin/status.js';
import { ConfigError } from '../errors.js';
import { journalBaseline } from '../fs/baseline.js';
import { detachStale, mountOver } from '../fs/mount.js';
import { recoverInFlight } from '../fs/recovery.js';
import type { ReplicationMode } from '../fs/passthrough.js';
import { Journal } from '../journal/journal.js';
import { createLogger } from '../log.js';
import { parseRoutes } from '../ship/routes.js';
import { Shipper } from '../ship/shipper.js';
import { readSecretFile } from '../wire/auth.js';
import { onShutdown, prepareStateDir, throttle } from './process.js';

export interface PrimaryArgs {
  mount: string;
  state: string;
  to: string;
  secretFile: string;
  mode: string;
  syncTimeout: string;
  drainTimeout: string;
}

export async function runPrimary(args: PrimaryArgs): Promise<void> {
  const mode = args.mode as ReplicationMode;
  if (mode !== 'async' && mode !== 'sync') throw new ConfigError(`--mode must be async or sync, not "${args.mode}"`);
  const syncTimeoutMs = seconds(args.syncTimeout, '--sync-timeout');
  const drainTimeoutMs = seconds(args.drainTimeout, '--drain-timeout');
  const routes = parseRoutes(args.to);
  const secret = readSecretFile(args.secretFile);
  const stateDir = prepareStateDir(args.state);
  const running = readStatus(stateDir);
  if (running?.running && running.pid !== process.pid) throw new ConfigError(`another drms process (pid ${running.pid}) uses --state ${stateDir}`);
  const log = createLogger('primary');
  const mountDir = await detachStale(args.mount, log).catch((err: NodeJS.ErrnoException) => {
    throw err.code === 'ENOENT' ? new ConfigError(`--mount ${args.mount} does not exist`) : err;
  });
  if (stateDir === mountDir || stateDir.startsWith(mountDir + path.sep)) throw new ConfigError('--state must not be inside --mount');

  process.umask(0); // modes come from the application's requests, already masked by the kernel
  const journal = Journal.open(stateDir);
  await recoverInFlight(journal, mountDir, log);
  const mounted = await mountOver(mountDir, journal, { mode, syncTimeoutMs, log });
  log.info({ path: mounted.dir, mode, journalId: journal.id, seq: journal.lastSeq }, 'mounted');

  const shipper = new Shipper(journal, { routes, secret, log, onChange: () => status() });
  const startedAt = new Date().toISOString();
  const status = throttle(() =>
    writeStatus(stateDir, {
      role: 'primary',
      startedAt,
      mount: mounted.dir,
      mode,
      routes: routes.map((r) => r.label),
      connected: shipper.connected,
      route: shipper.route?.label,
      peer: shipper.peer,
      lastError: shipper.lastError,
      baselineDone: journal.baselineDone,
    }), 250);
  status();
  const heartbeat = setInterval(status, 1000);
  shipper.start();

  onShutdown(log, async () => {
    clearInterval(heartbeat);
    await mounted.unmount().catch((err) => log.error({ err, path: mounted.dir }, 'unmount failed'));
    log.info({ path: mounted.dir }, 'unmounted; draining the journal to the backup');
    const drained = await shipper.drain(drainTimeoutMs);
    if (!drained) log.warn({ seq: journal.lastSeq, acked: journal.ackedSeq }, 'backlog not fully shipped; it stays in the journal and ships on next start');
    await shipper.stop();
    status.now();
    await journal.close();
  });

  if (!journal.baselineDone) {
    // Writers wait while the existing tree is journaled, so the copy and live changes keep their order.
    const stats = await mounted.exclusive(() => journalBaseline(mounted.root, journal, log));
    log.info(stats, 'initial copy journaled');
    status();
  }
}

function seconds(v: string, flag: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new ConfigError(`${flag} must be a positive number of seconds, not "${v}"`);
  return n * 1000;
}
