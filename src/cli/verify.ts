// `drms verify`: asks the running primary to compare both trees (and repair), and prints what differs.
import path from 'node:path';
import { ask } from '../admin/control.js';
import { ConfigError } from '../errors.js';
import type { VerifyReport } from '../verify/resync.js';

export async function runVerify(stateArg: string, repair: boolean, timeoutMs: number): Promise<VerifyReport> {
  const state = path.resolve(stateArg);
  const r = await ask<VerifyReport & { error?: string }>(state, { cmd: 'verify', repair }, timeoutMs);
  if (!r) throw new ConfigError(`no drms primary is running with --state ${state}`, { path: state });
  if (r.error) throw new ConfigError(`verify cannot run: ${r.error}`, { path: state });
  return r;
}

export function formatVerify(r: VerifyReport): string {
  const scope = `${r.entries} entries, ${(r.bytes / 2 ** 20).toFixed(1)} MiB, ${(r.durationMs / 1000).toFixed(1)} s`;
  if (r.identical) return `identical (${scope})`;
  const lines = [`DRIFT: ${r.differences.length} difference(s) (${scope})${r.repaired ? `; ${r.repaired} repaired` : ''}`];
  for (const d of r.differences) lines.push(`  ${d.kinds.join(',').padEnd(22)} ${d.path}`);
  return lines.join('\n');
}
