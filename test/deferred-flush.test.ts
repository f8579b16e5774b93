// The backup's deferred flush: an async primary hears its plain writes applied at once and durable later (with the
// groups that follow, or when it asks: drms sync); a backup killed in between loses nothing; sync mode never defers.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { NodeReport } from '../dist/cli/report.js';
import { drms, layout, sh, startBackup, startPrimary } from './helpers/cluster.js';
import { snapshot } from './helpers/tree.js';

/** Longer than any test here: the backup's own timer never flushes, only the primary's Flush does. */
const NEVER = ['--flush-delay', '600000'];

async function status(state: string): Promise<NodeReport> {
  return JSON.parse((await drms(['status', '--state', state, '--json'])).stdout) as NodeReport;
}

/** Until the backup has applied everything the primary journaled (lagOps 0), or 20 s. */
async function replayed(state: string): Promise<NodeReport> {
  for (let i = 0; i < 400; i++) {
    const s = await status(state);
    if (s.lagOps === 0 && s.lastSeq! > 0) return s;
    await sleep(50);
  }
  throw new Error('the backup did not apply the writes within 20 s');
}

// Plain appends through one open, so that a loaded machine still writes them well inside the redo log's span (1 s).
const appends = (file: string, from: number, to: number) => `for i in $(seq ${from} ${to}); do echo "record $i"; done >> ${file}`;

/**
 * A new file, applied on its own first (its create is flushed with the files: a checkpoint, which starts the redo
 * log's span), then appends: applied, and not durable until asked. Run together, a loaded primary could take the
 * create and the appends into one batch, and the create's flush would make them durable too. The create is watched
 * for on the backup's target, not through `drms status`: on a loaded machine a status process can take longer than
 * the redo log's span (1 s), and the appends would then start a checkpoint of their own.
 */
async function createThenAppend(prod: string, dr: string, file: string, records: number): Promise<void> {
  await sh(`: > ${file}`, prod);
  for (let i = 0; !fs.existsSync(path.join(dr, file)); i++) {
    if (i === 4000) throw new Error(`the backup did not create ${file} within 20 s`);
    await sleep(5);
  }
  await sh(appends(file, 1, records), prod);
}

t.test('async: writes are applied at once and made durable when the primary asks; a backup killed in between loses nothing', async (t) => {
  const { prod, dr, pstate, bstate, secret } = layout(t);
  const backup = await startBackup(t, { target: dr, state: bstate, secret, extra: NEVER });
  const primary = await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret });
  await primary.waitFor('connected to backup; shipping');

  await createThenAppend(prod, dr, 'a.log', 50);
  const before = await replayed(pstate);
  t.equal(before.replayedSeq, before.lastSeq, 'every write applied on the backup');
  t.ok(before.appliedSeq < before.replayedSeq!, `not all durable yet: applied ${before.replayedSeq}, durable ${before.appliedSeq}`);
  t.ok(before.durableLagSeconds! > 0, 'the durable lag says so');
  t.equal(before.lagSeconds, 0, 'the replication lag does not');

  const synced = await drms(['sync', '--state', pstate, '--timeout', '20']);
  t.equal(synced.code, 0, `drms sync asks the backup for its flush instead of waiting for its timer: ${synced.stderr}`);
  const after = await status(pstate);
  t.equal(after.appliedSeq, after.lastSeq, 'then everything is durable');
  t.equal(after.durableLagSeconds, 0);

  // Applied, not flushed, and the backup dies: the primary still holds those entries and sends them again.
  await createThenAppend(prod, dr, 'b.log', 50);
  const pending = await replayed(pstate);
  t.ok(pending.appliedSeq < pending.replayedSeq!, `entries applied and not durable when the backup is killed (durable ${pending.appliedSeq} of ${pending.replayedSeq})`);
  backup.proc.kill('SIGKILL');
  await backup.exited;
  await sh(`: > c.log; ${appends('c.log', 1, 20)}`, prod);
  await startBackup(t, { target: dr, state: bstate, secret, port: backup.port });
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '30'])).code, 0, 'the restarted backup catches up');
  for (const f of ['a.log', 'b.log', 'c.log']) {
    const records = fs.readFileSync(path.join(dr, f), 'utf8').split('\n').filter(Boolean);
    t.same(records, fs.readFileSync(path.join(prod, f), 'utf8').split('\n').filter(Boolean), `${f}: every record once, in order`);
  }
  const [p, b] = [await snapshot(prod), await snapshot(dr)];
  t.same(b.entries, p.entries, 'trees identical');
});

t.test('sync mode: the backup flushes every group at once, whatever its flush delay', async (t) => {
  const { prod, dr, pstate, bstate, secret } = layout(t);
  const backup = await startBackup(t, { target: dr, state: bstate, secret, extra: NEVER });
  const primary = await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret, mode: 'sync', extra: ['--sync-timeout', '20', '--on-sync-timeout', 'fail'] });
  await primary.waitFor('connected to backup; shipping');
  await sh('for i in $(seq 1 30); do echo "record $i" >> s.log; done', prod);
  const s = await status(pstate);
  t.equal(s.appliedSeq, s.lastSeq, 'each close waited for the backup to make its record durable');
  t.equal(s.replayedSeq, s.appliedSeq, 'nothing was applied without being made durable');
  t.equal(fs.readFileSync(path.join(dr, 's.log'), 'utf8').split('\n').filter(Boolean).length, 30);
});
