// Failback: a site that was primary rejoins as a backup of a newer primary. What it journaled after the point where
// the new primary's lineage left it never reached the new primary; before the new primary's copy overwrites those
// files, they are copied aside with the list of operations (never dropped silently), and the old journal is retired.
import fs from 'node:fs';
import path from 'node:path';
import { Journal } from '../journal/journal.js';
import type { Logger } from '../log.js';
import { divergenceSeq, type EpochRecord } from './generation.js';

export interface QuarantineEntry {
  seq: number;
  ts: number;
  op: string;
  path?: string;
  to?: string;
  bytes?: number;
}

export interface Quarantine {
  dir: string;
  journalId: string;
  /** The first unreplicated seq of the old journal. */
  fromSeq: number;
  toSeq: number;
  at: string;
  entries: QuarantineEntry[];
  /** Paths (as of now in the directory) copied under dir/files. */
  files: string[];
}

/** Entries listed one by one; beyond this only the count is kept (the retired journal holds them all). */
const MAX_LISTED = 100_000;

/**
 * If `stateDir` holds a journal of this site's own time as primary, quarantines what it journaled past the new
 * lineage and retires it. Returns what was quarantined (undefined when there was no journal, or nothing past it).
 */
export async function quarantineDivergence(stateDir: string, target: string, lineage: readonly EpochRecord[], log: Logger): Promise<Quarantine | undefined> {
  const journalDir = path.join(stateDir, 'journal');
  if (!fs.existsSync(journalDir)) return undefined;
  const journal = Journal.open(stateDir, { readOnly: true });
  const journalId = journal.id;
  // Not in the new lineage: nothing of it is known to have reached the new primary beyond what was acknowledged.
  const replicated = divergenceSeq(lineage, journalId) ?? journal.ackedSeq;
  const entries: QuarantineEntry[] = [];
  const paths = new Set<string>();
  let toSeq = replicated;
  try {
    for (const e of journal.entriesFrom(replicated + 1)) {
      toSeq = e.seq;
      const p = 'path' in e ? e.path : undefined;
      const to = 'to' in e ? e.to : undefined;
      for (const x of [p, to]) if (x) paths.add(x);
      if (entries.length < MAX_LISTED) entries.push({ seq: e.seq, ts: e.ts, op: e.op, path: p, to, bytes: e.op === 'write' ? e.data.length : undefined });
    }
  } finally {
    await journal.close();
  }
  if (toSeq === replicated) {
    log.info({ journalId, seq: replicated }, 'rejoining as backup: every operation of this site\'s journal was replicated; the journal is retired');
    fs.rmSync(journalDir, { recursive: true, force: true });
    return undefined;
  }
  const at = new Date().toISOString();
  const dir = path.join(stateDir, 'quarantine', `${at.replace(/[:.]/g, '-')}-${journalId.slice(0, 8)}`);
  const files: string[] = [];
  for (const p of [...paths].sort()) {
    const src = target + p;
    const st = await fs.promises.lstat(src).catch(() => undefined);
    if (!st?.isFile() && !st?.isSymbolicLink()) continue;
    const dst = path.join(dir, 'files', p);
    await fs.promises.mkdir(path.dirname(dst), { recursive: true });
    await fs.promises.cp(src, dst, { preserveTimestamps: true, verbatimSymlinks: true });
    files.push(p);
  }
  const q: Quarantine = { dir, journalId, fromSeq: replicated + 1, toSeq, at, entries, files };
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'quarantine.json'), JSON.stringify({ ...q, listed: entries.length, count: toSeq - replicated }, null, 1) + '\n');
  fs.renameSync(journalDir, path.join(dir, 'journal'));
  log.error({ path: dir, journalId, seq: replicated + 1, toSeq, files: files.length },
    'QUARANTINED: operations this site journaled as primary that never reached the new primary; copies of their files and the list are kept here');
  return q;
}

/** The quarantines kept in a state directory, newest last (for status). */
export function listQuarantines(stateDir: string): Array<{ dir: string; journalId: string; fromSeq: number; toSeq: number; at: string; files: number }> {
  const base = path.join(stateDir, 'quarantine');
  let names: string[];
  try {
    names = fs.readdirSync(base).sort();
  } catch {
    return [];
  }
  return names.flatMap((n) => {
    try {
      const q = JSON.parse(fs.readFileSync(path.join(base, n, 'quarantine.json'), 'utf8')) as Quarantine;
      return [{ dir: q.dir, journalId: q.journalId, fromSeq: q.fromSeq, toSeq: q.toSeq, at: q.at, files: q.files.length }];
    } catch {
      return [];
    }
  });
}
