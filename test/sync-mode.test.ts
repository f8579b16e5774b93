// Sync mode: fdatasync and close through the mount return only once the backup has the record; without a backup it fails.
import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { drms, startBackup, startPrimary, tmpdir, writeSecret, layout } from './helpers/cluster.js';
import { FaultProxy } from './helpers/fault-proxy.js';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';

const run = promisify(execFile);
const WRITER = path.resolve(import.meta.dirname, 'fixtures/append-fsync.mjs');
const appendFsync = async (file: string, record: string) => (await run(process.execPath, [WRITER, file, record])).stdout.trim();

t.test('fdatasync waits for the backup, and fails with EIO when it does not answer in time', async (t) => {
  const dir = tmpdir(t);
  const prod = path.join(dir, 'prod');
  const dr = path.join(dir, 'dr');
  fs.mkdirSync(prod);
  const secret = writeSecret(dir);
  const backup = await startBackup(t, { target: dr, state: path.join(dir, 'bstate'), secret });
  const primary = await startPrimary(t, { mount: prod, state: path.join(dir, 'pstate'), to: `127.0.0.1:${backup.port}`, secret, mode: 'sync', extra: ['--sync-timeout', '2', '--on-sync-timeout', 'fail'] });
  await primary.waitFor('connected to backup; shipping');

  for (let i = 1; i <= 20; i++) {
    t.match(await appendFsync(path.join(prod, 'txn.log'), `record ${i}`), /^ok /);
    // No drms sync here: the fdatasync itself must have waited for the backup.
    const onBackup = fs.readFileSync(path.join(dr, 'txn.log'), 'utf8').trim().split('\n');
    if (onBackup[onBackup.length - 1] !== `record ${i}`) t.fail(`record ${i} not on the backup when fdatasync returned`);
  }
  t.equal(fs.readFileSync(path.join(dr, 'txn.log'), 'utf8').split('\n').filter(Boolean).length, 20, 'each record was on the backup when its fdatasync returned');

  backup.proc.kill('SIGKILL');
  await backup.exited;
  const result = await appendFsync(path.join(prod, 'txn.log'), 'record 21');
  const [word, code, ms] = result.split(' ');
  t.equal(`${word} ${code}`, 'error EIO', 'fdatasync fails when the backup cannot acknowledge');
  t.ok(Number(ms) >= 1900, `after the sync timeout (${ms} ms)`);
  const logged = await primary.waitFor(/sync mode: the backup did not acknowledge in time; failing/);
  t.match(logged.path, '/txn.log');
});

t.test('a close without fsync waits for the backup too', async (t) => {
  const { prod, dr, pstate, bstate, secret } = layout(t);
  const backup = await startBackup(t, { target: dr, state: bstate, secret });
  // 150 ms each way: a close that did not wait would return long before its record reached the backup.
  const proxy = await FaultProxy.start(backup.port);
  t.teardown(() => proxy.close());
  const primary = await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${proxy.port}`, secret, mode: 'sync' });
  await primary.waitFor('connected to backup; shipping');
  proxy.delayMs = 150;
  for (let i = 1; i <= 3; i++) {
    const started = Date.now();
    await run(process.execPath, ['-e', `require('node:fs').appendFileSync(${JSON.stringify(path.join(prod, 'closed.log'))}, 'closed ${i}\\n')`]);
    const onBackup = fs.readFileSync(path.join(dr, 'closed.log'), 'utf8').split('\n').filter(Boolean).pop();
    t.equal(onBackup, `closed ${i}`, `record ${i} on the backup when close returned (${Date.now() - started} ms)`);
  }
});

t.test('by default, a silent backup degrades sync mode to async, loudly, until it catches up', async (t) => {
  const { dir, prod, dr, pstate, bstate, secret } = layout(t);
  const backup = await startBackup(t, { target: dr, state: bstate, secret });
  const primary = await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret, mode: 'sync', extra: ['--sync-timeout', '2'] });
  await primary.waitFor('connected to backup; shipping');
  backup.proc.kill('SIGKILL');
  await backup.exited;

  const first = (await appendFsync(path.join(prod, 'txn.log'), 'while down 1')).split(' ');
  t.equal(first[0], 'ok', 'the application keeps running');
  t.ok(Number(first[1]) >= 1900, `after waiting out the sync timeout (${first[1]} ms)`);
  await primary.waitFor(/SYNC MODE DEGRADED TO ASYNC/);
  const second = (await appendFsync(path.join(prod, 'txn.log'), 'while down 2')).split(' ');
  t.ok(Number(second[1]) < 1000, `later calls do not wait while degraded (${second[1]} ms)`);
  t.equal(JSON.parse((await drms(['status', '--state', pstate, '--json'])).stdout).syncDegraded, true, 'status says so');

  await startBackup(t, { target: dr, state: bstate, secret, port: backup.port });
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '20'])).code, 0);
  t.match(await appendFsync(path.join(prod, 'txn.log'), 'after'), /^ok /);
  await primary.waitFor('sync mode restored: the backup has caught up');
  t.equal(JSON.parse((await drms(['status', '--state', pstate, '--json'])).stdout).syncDegraded, false);
  t.equal(fs.readFileSync(path.join(dr, 'txn.log'), 'utf8'), 'while down 1\nwhile down 2\nafter\n');
});

t.test('site lost in sync mode: the backup alone holds every record whose fdatasync returned', async (t) => {
  const dir = tmpdir(t);
  const [prod, dr] = [path.join(dir, 'prod'), path.join(dir, 'dr')];
  fs.mkdirSync(prod);
  const secret = writeSecret(dir);
  const backup = await startBackup(t, { target: dr, state: path.join(dir, 'bstate'), secret });
  const primary = await startPrimary(t, { mount: prod, state: path.join(dir, 'pstate'), to: `127.0.0.1:${backup.port}`, secret, mode: 'sync', extra: ['--on-sync-timeout', 'fail'] });
  await primary.waitFor('connected to backup; shipping');
  const acks = path.join(dir, 'acks');
  const writer = spawn(process.execPath, [path.resolve(import.meta.dirname, 'fixtures/txn-writer.mjs'), path.join(prod, 'txn.log'), acks, '100000']);
  t.teardown(() => writer.kill('SIGKILL'));
  await sleep(2500);
  primary.proc.kill('SIGKILL'); // the production site is gone; it never comes back
  await primary.exited;
  writer.kill('SIGKILL');
  const acked = fs.readFileSync(acks, 'utf8').split('\n').filter(Boolean).map(Number);
  t.ok(acked.length > 50, `${acked.length} records were acknowledged before the loss`);
  const onBackup = new Set(fs.readFileSync(path.join(dr, 'txn.log'), 'utf8').split('\n').filter(Boolean));
  const missing = acked.filter((n) => !onBackup.has(`rec ${n}`));
  t.same(missing, [], 'every acknowledged record is on the backup');
});
