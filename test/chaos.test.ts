// Every fault at once, against a transaction workload: at the end, every acknowledged record is on the backup
// exactly once and in order, and the trees are identical.
import t from 'tap';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { drms, startBackup, startPrimary, type BackupNode, type Node, layout } from './helpers/cluster.js';
import { FaultProxy } from './helpers/fault-proxy.js';
import { mtimeDrift, snapshot } from './helpers/tree.js';

const RECORDS = 4000;

t.test('transaction workload under backup kills, route cuts, corrupted frames and primary SIGKILLs', async (t) => {
  const { dir, prod, dr, pstate, bstate, secret } = layout(t);
  let backup: BackupNode = await startBackup(t, { target: dr, state: bstate, secret });
  const port = backup.port;
  const [a, b] = [await FaultProxy.start(port), await FaultProxy.start(port)];
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  const primaryArgs = { mount: prod, state: pstate, to: `127.0.0.1:${a.port},127.0.0.1:${b.port}`, secret };
  let primary: Node = await startPrimary(t, primaryArgs);

  const acks = path.join(dir, 'acks');
  const writer = spawn(process.execPath, [path.resolve(import.meta.dirname, 'fixtures/txn-writer.mjs'), path.join(prod, 'txn.log'), acks, String(RECORDS)]);
  const writerDone = new Promise((r) => writer.on('exit', r));
  t.teardown(() => writer.kill('SIGKILL'));
  const faults: string[] = [];
  const step = async (name: string, fn: () => Promise<void> | void) => {
    await sleep(600);
    await fn();
    faults.push(name);
  };

  await step('backup SIGKILL and restart', async () => {
    backup.proc.kill('SIGKILL');
    await backup.exited;
    await sleep(300);
    backup = await startBackup(t, { target: dr, state: bstate, secret, port });
  });
  await step('preferred route cut', () => a.down());
  await step('corrupted frame on the second route', () => b.flipByte('toBackup', 100));
  await step('preferred route restored, with 40 ms of delay', () => {
    a.up();
    a.delayMs = 40;
  });
  await step('primary SIGKILL and remount', async () => {
    primary.proc.kill('SIGKILL');
    await primary.exited;
    await sleep(200);
    primary = await startPrimary(t, primaryArgs);
  });
  await step('corrupted frame on the preferred route', () => a.flipByte('toBackup', 300));
  await step('delay gone, both routes silent', () => {
    a.delayMs = 0;
    a.blackhole = true;
    b.blackhole = true;
  });
  await step('routes answer again', () => {
    a.up();
    b.up();
  });
  await step('backup SIGTERM and restart', async () => {
    backup.proc.kill('SIGTERM');
    await backup.exited;
    backup = await startBackup(t, { target: dr, state: bstate, secret, port });
  });
  await step('primary SIGKILL and remount again', async () => {
    primary.proc.kill('SIGKILL');
    await primary.exited;
    primary = await startPrimary(t, primaryArgs);
  });

  await writerDone;
  t.equal(faults.length, 10, `faults injected: ${faults.join('; ')}`);
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '90'])).code, 0);
  const onBackup = fs.readFileSync(path.join(dr, 'txn.log'), 'utf8').split('\n').filter(Boolean);
  t.same(onBackup, Array.from({ length: RECORDS }, (_, i) => `rec ${i + 1}`), 'every record exactly once, in order');
  const acked = fs.readFileSync(acks, 'utf8').split('\n').filter(Boolean).map(Number);
  t.ok(acked.length > RECORDS * 0.9, `${acked.length} records acknowledged to the writer`);
  t.ok(acked.every((n) => onBackup[n - 1] === `rec ${n}`), 'each acknowledged record is on the backup');
  const [p, q] = [await snapshot(prod), await snapshot(dr)];
  t.same(q.entries, p.entries, 'trees identical');
  t.same(mtimeDrift(p, q), []);
});
