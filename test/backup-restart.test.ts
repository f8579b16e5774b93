// The backup goes away twice during a workload (SIGTERM, then SIGKILL) and comes back: no gap, no duplicate. After a
// power cut it applies again what it acknowledged through its redo log alone.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BackupState } from '../dist/apply/state.js';
import { FrameType } from '../dist/wire/frame.js';
import { connectAsPrimary, sendBatch, sendEntries, type Entry } from './helpers/batch.js';
import { drms, layout, sh, startBackup, startPrimary, tmpdir, writeSecret } from './helpers/cluster.js';
import { mtimeDrift, snapshot } from './helpers/tree.js';
import { appendSynced } from './helpers/workload.js';

const RECORDS = 1500;

t.test('backup stopped and restarted during a workload converges with no gap or duplicate', async (t) => {
  const dir = tmpdir(t);
  const prod = path.join(dir, 'prod');
  const dr = path.join(dir, 'dr');
  const bstate = path.join(dir, 'bstate');
  const pstate = path.join(dir, 'pstate');
  fs.mkdirSync(prod);
  const secret = writeSecret(dir);
  const first = await startBackup(t, { target: dr, state: bstate, secret });
  const port = first.port;
  await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${port}`, secret });

  const workload = sh(`
    mkdir -p logs
    for i in $(seq 1 ${RECORDS}); do
      echo "record $i" >> logs/txn.log
      if (( i % 100 == 0 )); then mkdir -p d$i && echo $i > d$i/f && mv d$i/f d$i/g; fi
    done`, prod);

  await sleep(700);
  first.proc.kill('SIGTERM');
  t.equal(await first.exited, 0, 'backup stops cleanly on SIGTERM');
  await sleep(800);
  const second = await startBackup(t, { target: dr, state: bstate, secret, port });
  await second.waitFor('primary authenticated');
  await sleep(500);
  second.proc.kill('SIGKILL');
  await second.exited;
  await sleep(500);
  const third = await startBackup(t, { target: dr, state: bstate, secret, port });

  await workload;
  const synced = await drms(['sync', '--state', pstate, '--timeout', '60']);
  t.equal(synced.code, 0, synced.stderr || synced.stdout);

  const records = fs.readFileSync(path.join(dr, 'logs/txn.log'), 'utf8').split('\n').filter(Boolean);
  t.equal(records.length, RECORDS, 'every record exactly once');
  t.ok(records.every((r, i) => r === `record ${i + 1}`), 'in order');
  const [p, b] = [await snapshot(prod), await snapshot(dr)];
  t.same(b.entries, p.entries, 'trees identical');
  t.same(mtimeDrift(p, b), []);
  const problems = [first, second, third].flatMap((n) => n.logs).filter((l) => /gap|undecodable|failed on the backup/.test(JSON.stringify(l)));
  t.same(problems, [], 'no sequence gap or apply failure was logged');
});

t.test('power cut on the backup: writes it acknowledged through its redo log alone are applied again at restart', async (t) => {
  const { prod, dr, pstate, bstate, secret } = layout(t);
  const first = await startBackup(t, { target: dr, state: bstate, secret });
  await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${first.port}`, secret });
  const RECORDS = 300;
  await appendSynced(path.join(prod, 'ledger.log'), RECORDS);
  t.equal((await drms(['sync', '--state', pstate])).code, 0, 'the backup acknowledged every record: the primary trimmed them');
  first.proc.kill('SIGKILL');
  await first.exited;

  // What only the redo log made durable: the ledger's appends since the backup last flushed its files.
  const state = BackupState.open(bstate);
  const redo = state.takeRedo();
  await state.close();
  t.ok(redo.length > RECORDS / 2, `${redo.length} entries were acknowledged through the redo log`);
  // fsync markers, on fuse-native the times journaled after the writes, and the ledger's create if the backup's last
  // checkpoint came before it.
  t.ok(redo.every((e) => ['create', 'write', 'fsync', 'times'].includes(e.op) && 'path' in e && e.path === '/ledger.log'), 'all of them the ledger\'s: writes, times and fsync markers, or its create');
  const wanted = fs.readFileSync(path.join(prod, 'ledger.log'), 'utf8');
  t.equal(fs.readFileSync(path.join(dr, 'ledger.log'), 'utf8'), wanted, 'before the "power cut": the killed backup\'s files have everything');
  // The power cut, as the backup's files see it: the writes after its last flush never reached the disk.
  const flushedAt = Math.min(...redo.flatMap((e) => (e.op === 'write' ? [e.offset] : [])));
  fs.truncateSync(path.join(dr, 'ledger.log'), flushedAt);

  const second = await startBackup(t, { target: dr, state: bstate, secret, port: first.port });
  const again = await second.waitFor('entries of the redo log applied again');
  t.equal(again.count, redo.length, 'the restarted backup applied them again before it listened');
  t.equal(fs.readFileSync(path.join(dr, 'ledger.log'), 'utf8'), wanted, 'every acknowledged record is back in the backup\'s file');
  await second.waitFor('primary authenticated');
  t.equal((await drms(['sync', '--state', pstate])).code, 0);
  const [p, b] = [await snapshot(prod), await snapshot(dr)];
  t.same(b.entries, p.entries, 'trees identical');
  t.same(mtimeDrift(p, b), []);
});

t.test('a backup killed after applying a log rotation and before its checkpoint resumes after it, not before', async (t) => {
  const { dr: target, bstate: state, secret } = layout(t);
  const key = Buffer.from(fs.readFileSync(secret, 'utf8').trim());
  const backup = await startBackup(t, { target, state, secret });
  const file = (p: string) => fs.readFileSync(path.join(target, p), 'utf8');
  const made: Entry[] = [
    { seq: 1, op: 'create', path: '/app.log', mode: 0o644, uid: 0, gid: 0 },
    { seq: 2, op: 'write', path: '/app.log', offset: 0, data: Buffer.from('yesterday\n') },
    { seq: 3, op: 'mkdir', path: '/spool', mode: 0o755, uid: 0, gid: 0 },
  ];
  t.equal((await sendBatch(backup.port, key, 'rotating', made)).type, 'Ack');
  fs.rmdirSync(path.join(target, 'spool'));
  execFileSync('mkfifo', [path.join(target, 'spool')]);
  // The rotation, then a write whose open waits for a reader of the FIFO: the batch is applied up to it, never
  // checkpointed, and the backup is killed there.
  const rotation: Entry[] = [
    { seq: 4, op: 'rename', path: '/app.log', to: '/app.log.1' },
    { seq: 5, op: 'create', path: '/app.log', mode: 0o644, uid: 0, gid: 0 },
    { seq: 6, op: 'write', path: '/app.log', offset: 0, data: Buffer.from('today\n') },
  ];
  const hung = sendBatch(backup.port, key, 'rotating', [...rotation, { seq: 7, op: 'write', path: '/spool', offset: 0, data: Buffer.from('x') }]).catch(() => undefined);
  for (let i = 0; i < 100 && !fs.existsSync(path.join(target, 'app.log.1')); i++) await sleep(50);
  await sleep(200);
  t.equal(file('app.log.1'), 'yesterday\n', 'the rotation is applied');
  backup.proc.kill('SIGKILL');
  await backup.exited;
  await hung;
  fs.rmSync(path.join(target, 'spool'));

  const again = await startBackup(t, { target, state, secret, port: backup.port });
  const resent = await sendBatch(again.port, key, 'rotating', [...rotation, { seq: 7, op: 'none' }]);
  t.equal(resent.welcome?.appliedSeq, 4, 'the restarted backup resumes after the last entry it had applied that is not harmless to apply again (the rename; no reboot since): the new log\'s create and write are applied again');
  t.equal(resent.type, 'Ack');
  t.equal(file('app.log.1'), 'yesterday\n', 'the rotated log keeps yesterday\'s lines: the rename is not applied again over the new log');
  t.equal(file('app.log'), 'today\n');
});

t.test('power cut on the backup: a file created and written since its last checkpoint comes back from the redo log', async (t) => {
  const { dr: target, bstate: state, secret } = layout(t);
  const key = Buffer.from(fs.readFileSync(secret, 'utf8').trim());
  const backup = await startBackup(t, { target, state, secret });
  // A directory (its mkdir is a checkpoint: the redo log's span of 1 s starts), then at once, on the same
  // connection, a new file in it: only logged.
  const { conn } = await connectAsPrimary(backup.port, key, 'created');
  sendEntries(conn, [{ seq: 1, op: 'mkdir', path: '/spool', mode: 0o755, uid: 0, gid: 0 }]);
  t.equal((await conn.read(5000))?.type, FrameType.Ack);
  const made: Entry[] = [
    { seq: 2, op: 'create', path: '/spool/new.tbl', mode: 0o640, uid: 0, gid: 0 },
    { seq: 3, op: 'write', path: '/spool/new.tbl', offset: 0, data: Buffer.from('row 1\nrow 2\n') },
    { seq: 4, op: 'fsync', path: '/spool/new.tbl' },
  ];
  sendEntries(conn, made);
  t.equal((await conn.read(5000))?.type, FrameType.Ack);
  conn.close();
  backup.proc.kill('SIGKILL');
  await backup.exited;

  const logged = BackupState.open(state);
  const redo = logged.takeRedo();
  await logged.close();
  t.same(redo.map((e) => e.op), ['create', 'write', 'fsync'], 'the create was acknowledged through the redo log, with the write after it');
  // The power cut, as the target sees it: neither the new name nor its data reached the disk.
  fs.rmSync(path.join(target, 'spool', 'new.tbl'));

  const again = await startBackup(t, { target, state, secret, port: backup.port });
  t.equal((await again.waitFor('entries of the redo log applied again')).count, 3);
  t.equal(fs.readFileSync(path.join(target, 'spool', 'new.tbl'), 'utf8'), 'row 1\nrow 2\n', 'the file is back, with its data');
  t.equal(fs.statSync(path.join(target, 'spool', 'new.tbl')).mode & 0o777, 0o640, 'and its mode');
  const resent = await sendBatch(again.port, key, 'created', [...made, { seq: 5, op: 'none' }]);
  t.equal(resent.welcome?.appliedSeq, 4, 'the restarted backup resumes after what its redo log held');
  t.equal(fs.readFileSync(path.join(target, 'spool', 'new.tbl'), 'utf8'), 'row 1\nrow 2\n', 'nothing applied twice');
});
