// Sync mode: fdatasync through the mount returns only once the backup has the record; without a backup it fails.
import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { startBackup, startPrimary, tmpdir, writeSecret } from './helpers/cluster.js';

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
  const primary = await startPrimary(t, { mount: prod, state: path.join(dir, 'pstate'), to: `127.0.0.1:${backup.port}`, secret, mode: 'sync', extra: ['--sync-timeout', '2'] });
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
  const logged = await primary.waitFor(/sync mode: backup did not acknowledge/);
  t.match(logged.path, '/txn.log');
});
