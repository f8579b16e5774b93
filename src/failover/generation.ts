// A site's generation for its mirrored set: the epoch it knows, the line of journals that led to it, and whether a
// newer epoch superseded it (fencing, as DRBD's generation identifiers do). Kept in <state>/generation.json.
import fs from 'node:fs';
import path from 'node:path';

/** One epoch's primary journal, and where the next epoch forked off it (the seq its successor had applied). */
export interface EpochRecord {
  epoch: number;
  journalId: string;
  /** The last seq of this journal the next epoch's primary holds; unset for the epoch in force. */
  endSeq?: number;
  /** When this epoch began (ISO). */
  since: string;
}

export interface Superseded {
  /** The newer epoch that fenced this site. */
  epoch: number;
  at: string;
  message: string;
}

export interface Generation {
  /** The newest epoch this site knows of; a peer with an older one is refused. */
  epoch: number;
  /** Oldest first; the last record is the epoch in force. Empty before the first primary journal is known. */
  lineage: EpochRecord[];
  /** Set on a primary that a newer epoch fenced: it must not serve writes again (it may rejoin as backup). */
  superseded?: Superseded;
}

const FILE = 'generation.json';
/** Records kept: enough to find any divergence point an operator could still care about. */
const MAX_LINEAGE = 32;

export function readGeneration(stateDir: string): Generation {
  const file = path.join(stateDir, FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { epoch: 1, lineage: [] };
    throw err;
  }
  const g = JSON.parse(text) as Generation;
  if (!Number.isInteger(g.epoch) || g.epoch < 1 || !Array.isArray(g.lineage)) throw new Error(`${file} is damaged: no valid epoch`);
  return g;
}

/** Written whole and made durable (temp file, fsync, rename, fsync of the directory) before it counts. */
export function writeGeneration(stateDir: string, g: Generation): void {
  const file = path.join(stateDir, FILE);
  const tmp = `${file}.tmp`;
  const lineage = g.lineage.slice(-MAX_LINEAGE);
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, JSON.stringify({ ...g, lineage }, null, 2) + '\n');
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  const dirFd = fs.openSync(stateDir, 'r');
  try {
    fs.fsyncSync(dirFd);
  } finally {
    fs.closeSync(dirFd);
  }
}

/**
 * The primary's journal is the one in force: recorded at its first start, kept as it is after. A new journal in
 * the same epoch (the old one was lost and the state directory started afresh) takes the epoch over.
 */
export function adoptJournal(g: Generation, journalId: string): Generation {
  const current = g.lineage[g.lineage.length - 1];
  if (current?.journalId === journalId) return g;
  const before = current && current.epoch === g.epoch ? g.lineage.slice(0, -1) : g.lineage;
  return { ...g, lineage: [...before, { epoch: g.epoch, journalId, since: new Date().toISOString() }] };
}

/**
 * A promotion: the next epoch begins, forking off `from` (the journal this site applied, up to `appliedSeq`).
 * The new primary's journal is recorded by adoptJournal when it opens.
 */
export function promote(g: Generation, from: { journalId: string | undefined; appliedSeq: number }): Generation {
  const lineage = g.lineage.map((r) => ({ ...r }));
  const last = lineage[lineage.length - 1];
  if (from.journalId && last?.journalId !== from.journalId) lineage.push({ epoch: g.epoch, journalId: from.journalId, since: new Date().toISOString() });
  const forked = lineage[lineage.length - 1];
  if (forked) forked.endSeq = from.appliedSeq;
  return { epoch: g.epoch + 1, lineage };
}

/**
 * Where this site's own journal `journalId` left the lineage of a newer primary: entries after that seq never
 * reached it. undefined when the journal is not in the lineage at all (none of it is known to have reached it).
 */
export function divergenceSeq(lineage: readonly EpochRecord[], journalId: string): number | undefined {
  return lineage.find((r) => r.journalId === journalId)?.endSeq;
}
