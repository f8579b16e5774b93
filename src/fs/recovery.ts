// After an unclean stop, settles the entries that may have been in flight, before the mount comes back.
// First the captured writes a power cut may have kept from their files (fdatasync flushed only the capture log):
// written again in order, with the times their last marker carried. Then the mutations journaled before they ran,
// one at a time in JavaScript (and a captured write whose data may not have landed is the capture log's last
// frame): redo each on the real directory (every apply is idempotent; they touch different files). If such a redo
// fails, that operation never happened.
import fs from 'node:fs';
import path from 'node:path';
import { Applier } from '../apply/applier.js';
import type { Logger } from '../log.js';
import type { JournalEntry, Op, Stamp } from '../journal/entry.js';
import type { Journal } from '../journal/journal.js';
import { stampsOf } from '../journal/stamps.js';

export async function recoverInFlight(journal: Journal, realDir: string, log: Logger): Promise<void> {
  if (!journal.uncleanStop) return;
  const captured = journal.takeRedo();
  if (captured.length) await redoCaptured(captured, realDir, log);
  for (const entry of journal.inDoubt()) await redo(journal, entry, realDir, log);
}

async function redoCaptured(entries: JournalEntry[], realDir: string, log: Logger): Promise<void> {
  const applier = new Applier(realDir, log);
  try {
    for (const e of entries) await applier.apply(e);
  } finally {
    await applier.close();
  }
  log.warn({ entries: entries.length, from: entries[0]!.seq, to: entries.at(-1)!.seq }, 'recovery: wrote the captured writes since the last checkpoint again');
}

async function redo(journal: Journal, last: JournalEntry, realDir: string, log: Logger): Promise<void> {
  const applier = new Applier(realDir, log);
  let redone: boolean;
  try {
    redone = await applier.apply(last);
  } finally {
    await applier.close();
  }
  const where = { seq: last.seq, op: last.op, path: 'path' in last ? last.path : undefined };
  if (!redone) {
    journal.retract(last.seq);
    log.warn(where, 'recovery: the operation in flight at the crash had failed; its entry is withdrawn');
    return;
  }
  journal.complete(last.seq, { op: await outcome(last, realDir), stamps: touchedStamps(last, realDir) });
  log.warn(where, 'recovery: redid the operation in flight at the crash');
}

/** The entry as it would have been completed: owners and modes as they are on disk. */
async function outcome(e: JournalEntry, root: string): Promise<Op> {
  const { seq: _seq, ts: _ts, stamps: _stamps, ...op } = e;
  if (op.op === 'create' || op.op === 'mkdir' || op.op === 'symlink' || op.op === 'chown') {
    const st = await fs.promises.lstat(root + op.path);
    const owner = { uid: st.uid, gid: st.gid };
    return op.op === 'create' || op.op === 'mkdir' ? { ...op, ...owner, mode: st.mode & 0o7777 } : { ...op, ...owner };
  }
  return op;
}

/** Times of every path the operation touched, as they are on disk now. */
function touchedStamps(e: JournalEntry, root: string): Stamp[] | undefined {
  if (!('path' in e)) return undefined;
  const paths = [e.path, path.posix.dirname(e.path)];
  if ('to' in e) paths.push(e.to, path.posix.dirname(e.to));
  return stampsOf(root, paths);
}
