// `drms status` and `drms sync`: read a state directory (of a running or stopped node) and report on it.
import { readStatus } from '../admin/status.js';
import { BackupState } from '../apply/state.js';
import { ConfigError } from '../errors.js';
import { readJournal } from '../journal/journal.js';
import fs from 'node:fs';
import path from 'node:path';

export interface NodeReport {
  role: 'primary' | 'backup';
  state: string;
  running: boolean;
  pid?: number;
  connected: boolean;
  peer?: string;
  route?: string;
  lastError?: string;
  mount?: string;
  mode?: string;
  target?: string;
  journalId?: string;
  lastSeq?: number;
  appliedSeq: number;
  lagOps?: number;
  lagSeconds?: number;
}

export function nodeReport(stateArg: string): NodeReport {
  const state = path.resolve(stateArg);
  const live = readStatus(state);
  const running = live?.running ?? false;
  const common = { state, running, pid: live?.pid, connected: Boolean(running && live?.connected), peer: live?.peer, lastError: live?.lastError };
  const journal = readJournal(state);
  if (journal) {
    const lagOps = journal.lastSeq - journal.ackedSeq;
    return {
      role: 'primary',
      ...common,
      route: live?.route,
      mount: live?.mount as string | undefined,
      mode: live?.mode as string | undefined,
      journalId: journal.journalId,
      lastSeq: journal.lastSeq,
      appliedSeq: journal.ackedSeq,
      lagOps,
      lagSeconds: lagOps > 0 && journal.oldestUnackedTs ? (Date.now() - journal.oldestUnackedTs) / 1000 : 0,
    };
  }
  if (fs.existsSync(path.join(state, 'backup'))) {
    const bs = BackupState.open(state);
    const applied = bs.get();
    void bs.close();
    return { role: 'backup', ...common, target: live?.target as string | undefined, journalId: applied.journalId, appliedSeq: applied.appliedSeq };
  }
  throw new ConfigError(`${state} is not a drms state directory (no journal or backup state in it)`);
}

export function formatReport(r: NodeReport): string {
  const rows: Array<[string, unknown]> = [
    ['role', r.role],
    ['state', r.state],
    ['running', r.running ? `yes (pid ${r.pid})` : 'no'],
    ['mount', r.mount],
    ['mode', r.mode],
    ['target', r.target],
    ['connected', r.connected ? `yes${r.route ? ` via ${r.route}` : ''}${r.peer ? ` (${r.peer})` : ''}` : 'no'],
    ['last error', r.lastError],
    ['journal', r.journalId],
    ['last journaled seq', r.lastSeq],
    ['last applied seq', r.appliedSeq],
    ['lag', r.lagOps === undefined ? undefined : `${r.lagOps} ops, ${r.lagSeconds!.toFixed(1)} s`],
  ];
  return rows.filter(([, v]) => v !== undefined).map(([k, v]) => `${(k + ':').padEnd(20)}${v}`).join('\n');
}

/** Waits until the backup has applied everything journaled before the call. */
export async function waitForSync(stateArg: string, timeoutMs: number): Promise<{ ok: boolean; message: string }> {
  const first = nodeReport(stateArg);
  if (first.role !== 'primary') throw new ConfigError(`drms sync takes a primary's --state; ${first.state} belongs to a backup`);
  const target = first.lastSeq!;
  const deadline = Date.now() + timeoutMs;
  for (let r = first; ; r = nodeReport(stateArg)) {
    if (r.appliedSeq >= target) return { ok: true, message: `backup has applied seq ${target}` };
    if (Date.now() >= deadline) {
      const why = !r.running ? 'the primary is not running' : !r.connected ? `the backup is not connected${r.lastError ? ` (${r.lastError})` : ''}` : 'the backup is still applying';
      return { ok: false, message: `timed out after ${timeoutMs / 1000} s: backup has applied seq ${r.appliedSeq} of ${target} (${target - r.appliedSeq} ops behind); ${why}` };
    }
    await new Promise((res) => setTimeout(res, 50));
  }
}
