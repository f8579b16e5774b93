// `drms status` and `drms sync`: ask the running node over its control socket; read a stopped node's state directly.
import fs from 'node:fs';
import path from 'node:path';
import { ask } from '../admin/control.js';
import { BackupState } from '../apply/state.js';
import { ConfigError } from '../errors.js';
import { readJournal } from '../journal/journal.js';
import { readGeneration } from '../failover/generation.js';
import { listQuarantines } from '../failover/quarantine.js';
import type { Progress } from '../verify/resync.js';

export interface NodeReport {
  role: 'primary' | 'backup';
  state: string;
  running: boolean;
  pid?: number;
  startedAt?: string;
  connected: boolean;
  peer?: string;
  route?: string;
  lastError?: string;
  reconnects?: number;
  routeSwitches?: number;
  mount?: string;
  mode?: string;
  syncDegraded?: boolean;
  backlogBytes?: number;
  backlogFull?: boolean;
  /** The FUSE binding serving the mount (primary). */
  binding?: string;
  /** io_uring entries that have served the mount's requests (primary, native binding). */
  ringEntries?: number;
  /** Namespace changes (create, mkdir, symlink, link, rename, unlink, rmdir) served on libfuse's threads (primary, native binding). */
  namesServedNatively?: number;
  target?: string;
  listen?: string;
  journalId?: string;
  lastSeq?: number;
  /** Durable at the backup (primary: as the backup acknowledged it). */
  appliedSeq: number;
  /** Primary: applied to the backup's files, durable there within its flush delay. */
  replayedSeq?: number;
  /** Primary: what the backup has not applied yet, and the age of its oldest operation. */
  lagOps?: number;
  lagSeconds?: number;
  /** Primary: the age of the oldest operation not yet durable at the backup. */
  durableLagSeconds?: number;
  divergences?: number;
  /** Watchdog: seconds the running mutation on the mount has taken (primary). */
  operationSeconds?: number;
  /** Watchdog: seconds the backup has been connected and behind without applying anything (primary). */
  stalledSeconds?: number;
  /** Watchdog: seconds the backup has spent on the batch it is applying (backup). */
  applyingSeconds?: number;
  /** Free bytes on the disk of the state directory (primary) or of the target (backup). */
  diskFreeBytes?: number;
  policy?: string;
  baseline?: Progress;
  lastVerify?: { at: string; identical: boolean; differenceCount: number };
  /** This site's epoch, and the connected peer's. */
  epoch?: number;
  peerEpoch?: number;
  /** Why the mount refuses writes (fenced, switched over), if it does. */
  readOnly?: string;
  /** A primary fenced by a newer epoch: it must rejoin as a backup. */
  superseded?: { epoch: number; at: string; message: string };
  /** Failback: this site's unreplicated operations from its time as primary, kept aside. */
  quarantines?: Array<{ dir: string; journalId: string; fromSeq: number; toSeq: number; at: string; files: number }>;
  eventCounts?: Record<string, number>;
  events?: unknown[];
}

const ASK_MS = 5000;

const diskChecks = new Map<string, { bytes?: number; at: number; running: boolean }>();

/**
 * Bytes available on the filesystem holding `dir`, as last measured (at most 5 s old). Measured in the background:
 * statfs on a hung disk must not block the process that reports the hang.
 */
export function diskFree(dir: string): number | undefined {
  const c = diskChecks.get(dir) ?? { at: 0, running: false };
  diskChecks.set(dir, c);
  if (!c.running && Date.now() - c.at > 5000) {
    c.running = true;
    fs.promises.statfs(dir).then((st) => (c.bytes = st.bavail * st.bsize), () => undefined).finally(() => {
      c.running = false;
      c.at = Date.now();
    });
  }
  return c.bytes;
}

export async function nodeReport(stateArg: string): Promise<NodeReport> {
  const state = path.resolve(stateArg);
  const live = await ask<NodeReport>(state, { cmd: 'status' }, ASK_MS);
  if (live) return live;
  // Nobody owns this state directory: its files can be read safely.
  const { epoch, superseded } = readGeneration(state);
  const journal = readJournal(state);
  if (journal) {
    const lagOps = journal.lastSeq - journal.ackedSeq;
    const lagSeconds = lagOps > 0 && journal.oldestUnackedTs ? (Date.now() - journal.oldestUnackedTs) / 1000 : 0;
    return { role: 'primary', state, running: false, connected: false, epoch, superseded, journalId: journal.journalId, lastSeq: journal.lastSeq, appliedSeq: journal.ackedSeq, lagOps, lagSeconds };
  }
  if (fs.existsSync(path.join(state, 'backup'))) {
    const bs = BackupState.open(state);
    const applied = bs.get();
    await bs.close();
    return { role: 'backup', state, running: false, connected: false, epoch, quarantines: listQuarantines(state), journalId: applied.journalId, appliedSeq: applied.appliedSeq };
  }
  throw new ConfigError(`${state} is not a drms state directory (no journal or backup state in it)`);
}

function copyLine(p: Progress | undefined): string | undefined {
  if (!p) return undefined;
  if (p.phase === 'done') return `done (${p.files} files, ${(p.bytesSent / 2 ** 20).toFixed(1)} MiB sent)`;
  return `${p.phase}: ${p.files}/${p.filesTotal} files, ${(p.bytes / 2 ** 20).toFixed(0)}/${(p.bytesTotal / 2 ** 20).toFixed(0)} MiB${p.etaSeconds !== undefined ? `, ETA ${p.etaSeconds} s` : ''}`;
}

export function formatReport(r: NodeReport): string {
  const rows: Array<[string, unknown]> = [
    ['role', r.role],
    ['state', r.state],
    ['running', r.running ? `yes (pid ${r.pid}, since ${r.startedAt})` : 'no'],
    ['mount', r.mount],
    ['FUSE', r.binding && `${r.binding}${r.ringEntries ? `, requests over io_uring (${r.ringEntries} ring entries in use)` : ', requests through /dev/fuse'}${r.namesServedNatively ? `, ${r.namesServedNatively} namespace changes served natively` : ''}`],
    ['mode', r.mode && (r.syncDegraded ? `${r.mode} (DEGRADED to async: backup not acknowledging)` : r.mode)],
    ['target', r.target],
    ['listen', r.listen],
    ['epoch', r.epoch === undefined ? undefined : `${r.epoch}${r.peerEpoch !== undefined ? ` (peer: ${r.peerEpoch})` : ''}`],
    ['FENCED', r.superseded && `by epoch ${r.superseded.epoch} at ${r.superseded.at}: ${r.superseded.message}`],
    ['read-only', r.readOnly],
    ['connected', r.connected ? `yes${r.route ? ` via ${r.route}` : ''}${r.peer ? ` (${r.peer})` : ''}` : 'no'],
    ['last error', r.lastError],
    ['reconnects', r.reconnects],
    ['route switches', r.routeSwitches],
    ['journal', r.journalId],
    ['last journaled seq', r.lastSeq],
    ['last applied seq', r.appliedSeq],
    ['lag', r.lagOps === undefined ? undefined : `${r.lagOps} ops, ${r.lagSeconds!.toFixed(1)} s${r.durableLagSeconds === undefined ? '' : ` (durable at the backup: ${r.durableLagSeconds.toFixed(1)} s)`}`],
    ['backlog', r.backlogBytes === undefined ? undefined : `${(r.backlogBytes / 2 ** 20).toFixed(1)} MiB${r.backlogFull ? ' (AT THE CAP: writers are held)' : ''}`],
    ['apply divergences', r.divergences],
    ['disk free', r.diskFreeBytes === undefined ? undefined : `${(r.diskFreeBytes / 2 ** 30).toFixed(1)} GiB`],
    ['policy', r.policy],
    ['initial copy', copyLine(r.baseline)],
    ['last verify', r.lastVerify && `${r.lastVerify.identical ? 'identical' : `${r.lastVerify.differenceCount} difference(s)`} at ${r.lastVerify.at}`],
    ...(r.quarantines ?? []).map((q): [string, unknown] => ['quarantine', `${q.dir}: seq ${q.fromSeq}-${q.toSeq} of journal ${q.journalId} (${q.files} files), ${q.at}`]),
  ];
  return rows.filter(([, v]) => v !== undefined).map(([k, v]) => `${(k + ':').padEnd(20)}${v}`).join('\n');
}

interface SyncAnswer {
  ok: boolean;
  target: number;
  appliedSeq: number;
  connected: boolean;
  lastError?: string;
  /** Set while the initial copy is not done: its phase. */
  copying?: string;
}

/** Waits until the backup has applied everything journaled before the call. */
export async function waitForSync(stateArg: string, timeoutMs: number): Promise<{ ok: boolean; message: string }> {
  const state = path.resolve(stateArg);
  const r = await ask<SyncAnswer>(state, { cmd: 'sync', timeoutMs }, timeoutMs + ASK_MS);
  if (!r) {
    const offline = await nodeReport(state);
    if (offline.role !== 'primary') throw new ConfigError(`drms sync takes a primary's --state; ${state} belongs to a backup`);
    return { ok: false, message: `the primary is not running; the backup has applied seq ${offline.appliedSeq} of ${offline.lastSeq}` };
  }
  if ('error' in r) throw new ConfigError(`drms sync: ${String((r as { error: unknown }).error)}`);
  if (r.ok) return { ok: true, message: `backup has applied seq ${r.target}` };
  const why = !r.connected ? `the backup is not connected${r.lastError ? ` (${r.lastError})` : ''}`
    : r.copying ? `the initial copy is not done (${r.copying})` : 'the backup is still applying';
  return { ok: false, message: `timed out after ${timeoutMs / 1000} s: backup has applied seq ${r.appliedSeq} of ${r.target} (${r.target - r.appliedSeq} ops behind); ${why}` };
}
