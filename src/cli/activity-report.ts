// `drms report`: what a node mirrored over a time window, for the node and per file, as text, JSON or CSV.
import fs from 'node:fs';
import path from 'node:path';
import { readActivityReport, type ActivityReport } from '../admin/activity.js';
import { ask } from '../admin/control.js';
import { ConfigError } from '../errors.js';

export async function activityReport(stateArg: string, sinceMs: number, files: boolean): Promise<ActivityReport> {
  const state = path.resolve(stateArg);
  const since = Date.now() - sinceMs;
  const live = await ask<ActivityReport & { error?: string }>(state, { cmd: 'report', since, files }, 30_000);
  if (live?.error) throw new ConfigError(`report: ${live.error}`);
  if (live) return live;
  // Nobody owns this state directory: its files can be read safely.
  if (!fs.existsSync(path.join(state, 'activity'))) throw new ConfigError(`no activity recorded under --state ${state}`, { path: state });
  return readActivityReport(state, since, files);
}

const iso = (ms: number | undefined) => (ms === undefined ? '' : new Date(ms).toISOString());

/** CSV: one row for the node (path "*"), then one per file. */
export function reportCsv(r: ActivityReport): string {
  const q = (v: string) => (/[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  const rows = [['path', 'class', 'ops', 'bytes', 'first_change', 'last_change', 'max_lag_seconds']];
  rows.push(['*', '', String(r.system.ops), String(r.system.bytes), iso(r.system.first), iso(r.system.last), r.system.maxLag.toFixed(3)]);
  for (const f of r.files ?? []) rows.push([f.path, f.cls, String(f.ops), String(f.bytes), iso(f.first), iso(f.last), f.maxLag.toFixed(3)]);
  return rows.map((row) => row.map(q).join(',')).join('\n');
}

export function reportText(r: ActivityReport): string {
  const s = r.system;
  const lines = [
    `from ${iso(r.since)} to ${iso(r.until)}`,
    `all files: ${s.ops} ops, ${s.bytes} bytes, max lag ${s.maxLag.toFixed(3)} s${s.first ? `, first change ${iso(s.first)}, last ${iso(s.last)}` : ''}`,
    `by kind: ${Object.entries(s.byKind).sort().map(([k, n]) => `${k} ${n}`).join(', ') || '-'}`,
  ];
  if (r.files) {
    lines.push('', `${'ops'.padStart(8)} ${'bytes'.padStart(12)} ${'max lag'.padStart(8)}  ${'last change'.padEnd(24)} ${'class'.padEnd(8)} path`);
    for (const f of r.files) lines.push(`${String(f.ops).padStart(8)} ${String(f.bytes).padStart(12)} ${f.maxLag.toFixed(2).padStart(8)}  ${iso(f.last).padEnd(24)} ${f.cls.padEnd(8)} ${f.path}`);
  }
  return lines.join('\n');
}
