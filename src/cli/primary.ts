// `drms primary`: mount over the production directory, journal every mutation, ship to the backup.
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { BackupServer } from '../apply/server.js';
import { ConfigError, FencedError } from '../errors.js';
import { adoptJournal, promote, readGeneration, writeGeneration } from '../failover/generation.js';
import { parseBinding, type BindingName } from '../fs/binding.js';
import { mountOver, type Mounted } from '../fs/mount.js';
import type { ReplicationMode } from '../fs/passthrough.js';
import { recoverInFlight } from '../fs/recovery.js';
import { Journal } from '../journal/journal.js';
import { Policy } from '../policy/policy.js';
import { Resync, type VerifyReport } from '../verify/resync.js';
import { rollbackOpenTransactions } from '../vos/transactions.js';
import { parseHostPort, parseRoutes, type Route } from '../ship/routes.js';
import { Shipper } from '../ship/shipper.js';
import { loadCredentials, type Credentials } from '../wire/auth.js';
import type { TlsFiles } from '../wire/tls.js';
import { loadSet } from './config.js';
import { startBackupRole, type BackupArgs } from './backup.js';
import { bytes, duration, flag, niceness, PRIMARY_DEFAULTS, seconds, type ConsoleFlags } from './flags.js';
import { SiteNode, type Role } from './node.js';
import { setThreadNice } from './process.js';
import { diskFree, type NodeReport } from './report.js';

export interface PrimaryArgs extends TlsFiles, ConsoleFlags {
  mount: string;
  state: string;
  to: string;
  secretFile?: string;
  mode: string;
  syncTimeout: string;
  onSyncTimeout: 'degrade' | 'fail';
  drainTimeout: string;
  maxBacklog: string;
  policy?: string;
  verifyEvery?: string;
  /** Where this site listens as the backup after a planned switchover (without it, no switchover). */
  listen?: string;
  /** The FUSE binding (native or fuse-native); mount-time only. */
  binding?: string;
  writebackCache?: boolean | string;
  /** Native binding: serve over io_uring when the kernel offers it (the default; --no-io-uring). */
  ioUring?: boolean | string;
  /** The JavaScript thread's nice value (setThreadNice); start-time only. */
  nice?: string;
}

/** What the flags (or a config set) say, checked; everything but mount, state and the console can change on SIGHUP. */
interface Settings {
  mode: ReplicationMode;
  syncTimeoutMs: number;
  onSyncTimeout: 'degrade' | 'fail';
  drainTimeoutMs: number;
  maxBacklogBytes: number;
  verifyEveryMs: number;
  policy: Policy;
  routes: Route[];
  credentials: Credentials;
  listen?: { host: string; port: number };
  binding: BindingName;
  writebackCache: boolean;
  ioUring: boolean;
  nice: number;
}

export function settingsOf(args: PrimaryArgs): Settings {
  const mode = args.mode as ReplicationMode;
  if (mode !== 'async' && mode !== 'sync') throw new ConfigError(`--mode must be async or sync, not "${args.mode}"`);
  if (args.onSyncTimeout !== 'degrade' && args.onSyncTimeout !== 'fail') throw new ConfigError(`--on-sync-timeout must be degrade or fail, not "${String(args.onSyncTimeout)}"`);
  return {
    mode,
    syncTimeoutMs: seconds(args.syncTimeout, '--sync-timeout'),
    onSyncTimeout: args.onSyncTimeout,
    drainTimeoutMs: seconds(args.drainTimeout, '--drain-timeout'),
    maxBacklogBytes: bytes(args.maxBacklog, '--max-backlog'),
    verifyEveryMs: args.verifyEvery ? duration(args.verifyEvery, '--verify-every') : 0,
    policy: args.policy ? Policy.load(args.policy) : Policy.everything(),
    routes: parseRoutes(args.to),
    ...(args.listen && { listen: parseHostPort(args.listen, '--listen', true) }),
    credentials: loadCredentials(args),
    binding: parseBinding(args.binding),
    writebackCache: flag(args.writebackCache, '--writeback-cache'),
    nice: niceness(args.nice ?? PRIMARY_DEFAULTS.nice, '--nice'),
    ioUring: flag(args.ioUring ?? true, 'ioUring'),
  };
}

/** The flags, or the set named in --config (read again at each SIGHUP). */
function argsOf(args: PrimaryArgs & { config?: string; set?: string }): PrimaryArgs {
  if (!args.config) {
    for (const f of ['mount', 'state', 'to'] as const) if (!args[f]) throw new ConfigError(`--${f} is required (or --config FILE)`);
    return args;
  }
  const flags = (['mount', 'state', 'to'] as const).filter((f) => args[f]);
  if (flags.length) throw new ConfigError(`give either --config or ${flags.map((f) => `--${f}`).join(', ')}, not both`);
  return loadSet(args.config, args.set);
}

export async function runPrimary(given: PrimaryArgs & { config?: string; set?: string }): Promise<void> {
  const args = argsOf(given);
  settingsOf(args); // every flag mistake is refused before anything starts
  const node = await SiteNode.open(args.state, 'primary', args);
  await node.serve(await startPrimaryRole(node, args, { reload: () => argsOf(given) }));
}

export interface PrimaryRole extends Role {
  readonly journalId: string;
}

/**
 * The primary: mounts over the directory, journals every mutation, ships to the backup. `reload` gives the flags
 * again on SIGHUP; `listener` is the fenced backup server of a site promoted in this process (it keeps refusing the
 * old primary on the backup's address until this role ends).
 */
export async function startPrimaryRole(node: SiteNode, args: PrimaryArgs, opts: { reload?: () => PrimaryArgs; listener?: BackupServer } = {}): Promise<PrimaryRole> {
  let settings = settingsOf(args);
  const { stateDir, events, activity } = node;
  const log = node.log;
  let generation = readGeneration(stateDir);
  if (generation.superseded) {
    throw new ConfigError(`this site was fenced at epoch ${generation.superseded.epoch} (${generation.superseded.at}) and must not serve as primary: ${generation.superseded.message}`, { path: stateDir });
  }
  let shipper: Shipper | undefined;
  let resync: Resync | undefined;
  let initialCopy: Promise<unknown> = new Promise(() => undefined);
  let journal: Journal | undefined;
  let mounted: Mounted | undefined;
  const startedAt = new Date().toISOString();
  // Watchdog: when the backup last applied something, to tell a stalled replication from an idle one.
  let progressAt = Date.now();
  let progressSeq = 0;
  const status = (): NodeReport => {
    const j = journal;
    if (!j) return { role: 'primary', state: stateDir, running: true, pid: process.pid, startedAt, connected: false, appliedSeq: 0, lastError: 'starting', epoch: generation.epoch };
    // Lag: what the backup has not applied; the durable lag also counts what it applied and has not flushed yet.
    const lagOps = j.lastSeq - j.replayedSeq;
    const oldest = lagOps > 0 ? j.oldestUnreplayedTs() : undefined;
    const oldestUndurable = j.lastSeq > j.ackedSeq ? j.oldestUnackedTs() : undefined;
    if (j.ackedSeq !== progressSeq || lagOps === 0) [progressSeq, progressAt] = [j.ackedSeq, Date.now()];
    const stalledSeconds = shipper?.connected && lagOps > 0 ? (Date.now() - progressAt) / 1000 : 0;
    return {
      role: 'primary', state: stateDir, running: true, pid: process.pid, startedAt, mount: mounted?.dir, mode: settings.mode, syncDegraded: mounted?.syncDegraded,
      epoch: generation.epoch, peerEpoch: shipper?.peerEpoch, readOnly: mounted?.readOnlyReason, superseded: generation.superseded,
      backlogBytes: j.backlogBytes(), backlogFull: mounted?.backlogFull, binding: settings.binding, ringEntries: mounted?.ringEntries,
      namesServedNatively: mounted?.namesServedNatively,
      connected: shipper?.connected ?? false, route: shipper?.route?.label, peer: shipper?.peer, lastError: shipper?.lastError,
      reconnects: shipper?.reconnects ?? 0, routeSwitches: shipper?.routeSwitches ?? 0,
      journalId: j.id, lastSeq: j.lastSeq, appliedSeq: j.ackedSeq, replayedSeq: j.replayedSeq, lagOps, lagSeconds: oldest ? (Date.now() - oldest) / 1000 : 0,
      durableLagSeconds: oldestUndurable ? (Date.now() - oldestUndurable) / 1000 : 0,
      operationSeconds: mounted?.operationSeconds ?? 0, stalledSeconds,
      diskFreeBytes: diskFree(stateDir), policy: settings.policy.file, baseline: resync?.progress, lastVerify: resync?.lastVerify && summary(resync.lastVerify),
      eventCounts: events.counts, events: events.recent(20),
    };
  };

  // For scripts that must find the process even when it does not answer (drms-umount --force).
  const pidFile = path.join(stateDir, 'primary.pid');
  fs.writeFileSync(pidFile, `${process.pid}\n`);
  const mountArg = path.resolve(args.mount);
  if (stateDir === mountArg || stateDir.startsWith(mountArg + path.sep)) throw new ConfigError('--state must not be inside --mount');
  process.umask(0); // modes come from the application's requests, already masked by the kernel
  journal = Journal.open(stateDir);
  const j0 = journal;
  const adopted = adoptJournal(generation, j0.id);
  if (adopted !== generation) writeGeneration(stateDir, (generation = adopted));
  j0.observer = (seq, e) => activity.record(seq, e.op, e.path, e.bytes);
  j0.on('acked', (seq: number) => activity.acked(seq));
  // Only now, owning --state, may a dead mount left by our predecessor be detached; the entry it left in flight
  // is settled on the real directory before the new mount serves anything.
  // Then transactions the crashed run left open are rolled back, as VOS recovery does.
  const { mode, syncTimeoutMs, onSyncTimeout, maxBacklogBytes, policy, binding, writebackCache, ioUring } = settings;
  mounted = await mountOver(mountArg, journal, { mode, syncTimeoutMs, onSyncTimeout, maxBacklogBytes, policy, events, log, binding, writebackCache, ioUring }, async (root) => {
    await recoverInFlight(j0, root, log);
    await rollbackOpenTransactions(j0, root, log);
  }).catch((err: NodeJS.ErrnoException) => {
    throw err.code === 'ENOENT' ? new ConfigError(`--mount ${args.mount} does not exist`) : err;
  });
  const m = mounted;
  setThreadNice(settings.nice, log);
  log.info({ path: m.dir, mode, binding, writebackCache, nice: settings.nice, journalId: journal.id, seq: journal.lastSeq, epoch: generation.epoch, policy: policy.describe() }, 'mounted');
  // The address where this site serves as the backup after a switchover refuses stale primaries meanwhile, also
  // after a restart of a promoted site: an old primary that comes back is told why it may not serve.
  const listener = opts.listener ?? (args.listen ? await fenceListener(settings, args.listen, m.root, stateDir, generation.epoch, node) : undefined);
  // A backup at a newer epoch refused us: another site is the primary now. Writes here would be lost: refuse them.
  const onFenced = (err: FencedError) => {
    generation = { ...generation, superseded: { epoch: err.epoch, at: new Date().toISOString(), message: err.message } };
    writeGeneration(stateDir, generation);
    m.readOnly(`fenced by a site at epoch ${err.epoch}`);
    events.emit('fenced', `FENCED: a site at epoch ${err.epoch} refused this primary (epoch ${generation.epoch}); the mount is read-only from now on: ${err.message}`, { epoch: err.epoch, peer: err.context.peer }, 'error');
  };
  shipper = new Shipper(journal, { routes: settings.routes, ...settings.credentials, generation, onFenced, events, log, deferredFlush: settings.mode === 'async' });
  shipper.start();
  const rs = new Resync({ root: m.root, journal, shipper, locked: (fn) => m.exclusive(fn), mirrored: (p, kind) => m.mirrored(p, kind), committed: m.committed, events, log });
  resync = rs;
  let stopping = false;

  const j = journal;
  const s = shipper;
  let verifyTimer: NodeJS.Timeout | undefined;

  // The mount serves at once; the initial copy (first start, or a changed policy) runs beside live changes.
  // After a crash, a verify repairs what an operation cut short may have left different.
  // Interrupted work (the backup went away mid-way) starts over; copies already made are not sent again.
  const untilDone = async (what: string, work: () => Promise<unknown>) => {
    for (;;) {
      try {
        return await work();
      } catch (err) {
        if (stopping) return;
        log.warn({ err }, `${what} interrupted; starting it again in 5 s`);
        await delay(5000);
      }
    }
  };
  const copyIfPolicyChanged = () => {
    if (j.baselinePolicy === settings.policy.fingerprint) return false;
    const fingerprint = settings.policy.fingerprint;
    initialCopy = untilDone('initial copy', () => rs.baseline(fingerprint));
    return true;
  };
  const scheduleVerify = () => {
    clearInterval(verifyTimer);
    verifyTimer = settings.verifyEveryMs ? setInterval(() => {
      if (s.connected) void rs.verify(false).catch((err) => log.warn({ err }, 'scheduled verify failed'));
      else log.warn({ lastError: s.lastError }, 'scheduled verify skipped: the backup is not connected');
    }, settings.verifyEveryMs) : undefined;
    verifyTimer?.unref();
  };
  if (!copyIfPolicyChanged()) {
    initialCopy = Promise.resolve();
    if (j.uncleanStop) void untilDone('verify after a crash', () => rs.verify(true));
  }
  scheduleVerify();

  // SIGHUP: read the flags' files (or the config set) again and apply what changed, without unmounting.
  const onHup = () => {
    let next: Settings;
    let nextArgs: PrimaryArgs;
    try {
      nextArgs = opts.reload ? opts.reload() : args;
      next = settingsOf(nextArgs);
    } catch (err) {
      events.emit('reload-refused', `configuration reload refused, the running configuration stays: ${(err as Error).message}`, {}, 'error');
      return;
    }
    const restartOnly = (['mount', 'state', 'binding', 'writebackCache', 'ioUring', 'nice', 'admin', 'adminTokenFile', 'alertCommand', 'alertWebhook', 'alertLag', 'alertBacklog', 'alertDisconnected', 'alertStuck'] as const)
      .filter((k) => String(nextArgs[k] ?? '') !== String(args[k] ?? ''));
    if (restartOnly.length) log.warn({ keys: restartOnly }, 'reload: these settings take effect only at the next start');
    const changed = (['to', 'secretFile', 'tlsCert', 'tlsKey', 'tlsCa', 'mode', 'syncTimeout', 'onSyncTimeout', 'maxBacklog', 'drainTimeout', 'policy', 'verifyEvery', 'listen'] as const)
      .filter((k) => nextArgs[k] !== args[k]);
    settings = next;
    Object.assign(args, nextArgs, { mount: args.mount, state: args.state });
    m.configure({ mode: next.mode, syncTimeoutMs: next.syncTimeoutMs, onSyncTimeout: next.onSyncTimeout, maxBacklogBytes: next.maxBacklogBytes, policy: next.policy });
    // Credentials are read again even when the flags name the same files: a renewed certificate.
    s.reconfigure({ routes: next.routes, ...next.credentials });
    scheduleVerify();
    const copying = copyIfPolicyChanged();
    events.emit('reloaded', `configuration reloaded${changed.length ? ` (${changed.join(', ')})` : ''}${copying ? '; the policy changed: copying the difference' : ''}`, { changed }, 'warn');
  };
  process.on('SIGHUP', onHup);

  /** Shipping and journaling end; the mount stays unless `unmount`. */
  const end = async (unmount: boolean) => {
    stopping = true;
    process.off('SIGHUP', onHup);
    clearInterval(verifyTimer);
    if (unmount) {
      await m.unmount().catch((err) => log.error({ err, path: m.dir }, 'unmount failed'));
      log.info({ path: m.dir }, 'unmounted; draining the journal to the backup');
      if (!m.readOnlyReason && !(await s.drain(settings.drainTimeoutMs))) {
        log.warn({ seq: j.lastSeq, acked: j.ackedSeq }, 'backlog not fully shipped; it stays in the journal and ships on next start');
      }
    }
    await s.stop();
    await j.close();
    await listener?.close();
  };

  /**
   * A planned switchover: writers are held, the journal drains, the backup takes over at the next epoch, and this
   * mount turns read-only. Then this process becomes the backup of the new primary, applying beneath the same mount.
   */
  const switchover = async (timeoutMs: number) => {
    if (!args.listen) return { error: 'this primary was started without --listen: it has no address to serve as the backup after a switchover' };
    if (m.readOnlyReason) return { error: `this primary is read-only (${m.readOnlyReason})` };
    if (!s.connected) return { error: `the backup is not connected${s.lastError ? `: ${s.lastError}` : ''}` };
    if (resync?.progress && resync.progress.phase !== 'done') return { error: `the initial copy is still running (${resync.progress.phase}); switch over once it is done` };
    const t0 = Date.now();
    let taken: { epoch: number; journalId: string; seq: number };
    try {
      taken = await m.exclusive(async () => {
        await j.waitAcked(j.lastSeq, timeoutMs);
        const next = promote(generation, { journalId: j.id, appliedSeq: j.lastSeq });
        const answer = await s.promote(next.epoch, timeoutMs);
        writeGeneration(stateDir, (generation = next));
        m.readOnly(`switched over: the primary is now the other site (epoch ${next.epoch})`);
        return { epoch: next.epoch, journalId: answer.journalId, seq: j.lastSeq };
      });
    } catch (err) {
      events.emit('switchover-failed', `switchover abandoned, this site stays the primary: ${(err as Error).message}`, {}, 'error');
      return { error: `switchover abandoned, this site stays the primary: ${(err as Error).message}` };
    }
    const pauseMs = Date.now() - t0;
    events.emit('switchover', `switched over to the backup at epoch ${taken.epoch}: applications paused ${pauseMs} ms; this site becomes its backup`, { ...taken, pauseMs }, 'warn');
    await end(false);
    // Every entry was applied by the new primary before it took over: the journal has nothing left to give.
    fs.rmSync(path.join(stateDir, 'journal'), { recursive: true, force: true });
    const backup = await startBackupRole(node, backupArgsOf(args), { mounted: m, primaryArgs: args });
    await node.serve(backup);
    return { ok: true, epoch: taken.epoch, pauseMs, drainedSeq: taken.seq, newJournalId: taken.journalId, listen: args.listen };
  };

  return {
    name: 'primary',
    journalId: j.id,
    status,
    classify: (p) => settings.policy.place(p, false).cls.name,
    commands: {
      verify: async (req) => {
        if (!s.connected) return { error: `the backup is not connected${s.lastError ? `: ${s.lastError}` : ''}` };
        if (rs.progress && rs.progress.phase !== 'done') return { error: `the initial copy is still running (${rs.progress.phase}); verify runs after it` };
        return rs.verify(req.repair === true);
      },
      sync: async (req) => {
        // The backup matches only once the initial copy is done: wait for it too.
        const deadline = Date.now() + (req.timeoutMs ?? 60_000);
        const copied = await Promise.race([initialCopy.then(() => true, () => false), delay(deadline - Date.now(), false, { ref: false })]);
        const target = j.lastSeq;
        const ok = copied && (await j.waitAcked(target, Math.max(1, deadline - Date.now())).then(() => true, () => false));
        return { ok, target, appliedSeq: j.ackedSeq, connected: s.connected, lastError: s.lastError, copying: copied ? undefined : rs.progress?.phase ?? 'starting' };
      },
      switchover: (req) => switchover(req.timeoutMs ?? 60_000),
    },
    async stop() {
      await end(true);
      fs.rmSync(pidFile, { force: true });
    },
  };
}

/** A backup server that only refuses: this site is the primary at `epoch`. */
async function fenceListener(settings: Settings, address: string, root: string, stateDir: string, epoch: number, node: SiteNode): Promise<BackupServer> {
  const server = new BackupServer({
    listen: settings.listen!, target: root, stateDir, ...settings.credentials, log: node.log,
    onPromote: () => Promise.reject(new ConfigError('this site is the primary')),
  });
  server.fence(epoch, `this site is the primary at epoch ${epoch}; it does not accept a primary's stream`, false);
  await server.listen().catch((err: Error) => {
    throw new ConfigError(`--listen ${address}: cannot listen: ${err.message}`);
  });
  return server;
}

/** This site's flags for the backup role it takes after a switchover: it listens, and applies to its own directory. */
function backupArgsOf(a: PrimaryArgs): BackupArgs {
  return { ...a, listen: a.listen!, target: a.mount };
}

/** The verify result without its full list of differences (status shows the first few). */
function summary(r: VerifyReport) {
  return { ...r, differences: r.differences.slice(0, 20), differenceCount: r.differences.length };
}
