// `drms primary`: mount over the production directory, journal every mutation, ship to the backup.
import path from 'node:path';
import { serveControl } from '../admin/control.js';
import { ConfigError } from '../errors.js';
import { journalBaseline } from '../fs/baseline.js';
import { mountOver, type Mounted } from '../fs/mount.js';
import type { ReplicationMode } from '../fs/passthrough.js';
import { recoverInFlight } from '../fs/recovery.js';
import { Journal } from '../journal/journal.js';
import { rollbackOpenTransactions } from '../vos/transactions.js';
import { createLogger } from '../log.js';
import { parseRoutes } from '../ship/routes.js';
import { Shipper } from '../ship/shipper.js';
import { loadCredentials } from '../wire/auth.js';
import type { TlsFiles } from '../wire/tls.js';
import { onShutdown, prepareStateDir } from './process.js';
import type { NodeReport } from './report.js';

export interface PrimaryArgs extends TlsFiles {
  mount: string;
  state: string;
  to: string;
  secretFile?: string;
  mode: string;
  syncTimeout: string;
  onSyncTimeout: 'degrade' | 'fail';
  drainTimeout: string;
  maxBacklog: string;
}

export async function runPrimary(args: PrimaryArgs): Promise<void> {
  const mode = args.mode as ReplicationMode;
  if (mode !== 'async' && mode !== 'sync') throw new ConfigError(`--mode must be async or sync, not "${args.mode}"`);
  const syncTimeoutMs = seconds(args.syncTimeout, '--sync-timeout');
  const drainTimeoutMs = seconds(args.drainTimeout, '--drain-timeout');
  const maxBacklogBytes = bytes(args.maxBacklog, '--max-backlog');
  const routes = parseRoutes(args.to);
  const credentials = loadCredentials(args);
  const stateDir = prepareStateDir(args.state);
  const log = createLogger('primary');
  let shipper: Shipper | undefined;
  let journal: Journal | undefined;
  let mounted: Mounted | undefined;
  const startedAt = new Date().toISOString();
  const control = await serveControl(stateDir, {
    status: (): NodeReport => {
      const j = journal;
      if (!j) return { role: 'primary', state: stateDir, running: true, pid: process.pid, startedAt, connected: false, appliedSeq: 0, lastError: 'starting' };
      const lagOps = j.lastSeq - j.ackedSeq;
      const oldest = lagOps > 0 ? j.oldestUnackedTs() : undefined;
      return {
        role: 'primary', state: stateDir, running: true, pid: process.pid, startedAt, mount: mounted?.dir, mode, syncDegraded: mounted?.syncDegraded, backlogBytes: j.backlogBytes(), backlogFull: mounted?.backlogFull,
        connected: shipper?.connected ?? false, route: shipper?.route?.label, peer: shipper?.peer, lastError: shipper?.lastError,
        reconnects: shipper?.reconnects ?? 0, routeSwitches: shipper?.routeSwitches ?? 0,
        journalId: j.id, lastSeq: j.lastSeq, appliedSeq: j.ackedSeq, lagOps, lagSeconds: oldest ? (Date.now() - oldest) / 1000 : 0,
      };
    },
    sync: async (req) => {
      const j = journal;
      if (!j) return { error: 'the primary is still starting' };
      const target = j.lastSeq;
      const ok = await j.waitAcked(target, req.timeoutMs ?? 60_000).then(() => true, () => false);
      return { ok, target, appliedSeq: j.ackedSeq, connected: shipper?.connected ?? false, lastError: shipper?.lastError };
    },
  }, log);

  const mountArg = path.resolve(args.mount);
  if (stateDir === mountArg || stateDir.startsWith(mountArg + path.sep)) throw new ConfigError('--state must not be inside --mount');
  process.umask(0); // modes come from the application's requests, already masked by the kernel
  journal = Journal.open(stateDir);
  const j0 = journal;
  // Only now, owning --state, may a dead mount left by our predecessor be detached; the entry it left in flight
  // is settled on the real directory before the new mount serves anything.
  // Then transactions the crashed run left open are rolled back, as VOS recovery does.
  mounted = await mountOver(mountArg, journal, { mode, syncTimeoutMs, onSyncTimeout: args.onSyncTimeout, maxBacklogBytes, log }, async (root) => {
    await recoverInFlight(j0, root, log);
    await rollbackOpenTransactions(j0, root, log);
  }).catch((err: NodeJS.ErrnoException) => {
    throw err.code === 'ENOENT' ? new ConfigError(`--mount ${args.mount} does not exist`) : err;
  });
  const m = mounted;
  log.info({ path: m.dir, mode, journalId: journal.id, seq: journal.lastSeq }, 'mounted');
  shipper = new Shipper(journal, { routes, ...credentials, log });
  shipper.start();

  const j = journal;
  const s = shipper;
  onShutdown(log, async () => {
    await m.unmount().catch((err) => log.error({ err, path: m.dir }, 'unmount failed'));
    log.info({ path: m.dir }, 'unmounted; draining the journal to the backup');
    if (!(await s.drain(drainTimeoutMs))) {
      log.warn({ seq: j.lastSeq, acked: j.ackedSeq }, 'backlog not fully shipped; it stays in the journal and ships on next start');
    }
    await s.stop();
    control.close();
    await j.close();
  });

  if (!j.baselineDone) {
    // Writers wait while the existing tree is journaled, so the copy and live changes keep their order.
    const stats = await m.exclusive(() => journalBaseline(m.root, j, log));
    log.info(stats, 'initial copy journaled');
  }
}

function seconds(v: string, flag: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new ConfigError(`${flag} must be a positive number of seconds, not "${v}"`);
  return n * 1000;
}

/** A size with an optional K, M, G or T suffix (powers of 1024). */
function bytes(v: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)B?$/i.exec(v.trim());
  if (!m) throw new ConfigError(`${flag} must be a size such as 512M or 8G, not "${v}"`);
  return Math.floor(Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase()));
}
