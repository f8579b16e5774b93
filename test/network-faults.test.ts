// Network faults between primary and backup, through the fault proxy: alternate routes, corruption, silence.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { drms, sh, startBackup, startPrimary, layout } from './helpers/cluster.js';
import { FaultProxy } from './helpers/fault-proxy.js';
import { mtimeDrift, snapshot } from './helpers/tree.js';

async function status(pstate: string): Promise<Record<string, unknown>> {
  return JSON.parse((await drms(['status', '--state', pstate, '--json'])).stdout);
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<number> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for: ${what}`);
    await sleep(100);
  }
  return Date.now() - start;
}

t.test('two routes: the preferred one dies mid-workload, shipping goes on over the second, then comes back', async (t) => {
  const { dir, prod, dr, pstate, bstate, secret } = layout(t);
  const backup = await startBackup(t, { target: dr, state: path.join(dir, 'bstate'), secret });
  const [a, b] = [await FaultProxy.start(backup.port), await FaultProxy.start(backup.port)];
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  const routeA = `127.0.0.1:${a.port}`;
  const routeB = `127.0.0.1:${b.port}`;
  await startPrimary(t, { mount: prod, state: pstate, to: `${routeA},${routeB}`, secret });
  await until('connected via the preferred route', async () => (await status(pstate)).route === routeA);

  // The writer goes on until told to stop, so it outlasts both route switches however fast the mount is.
  const stop = path.join(dir, 'stop-writer');
  const workload = sh(`i=0; while [ ! -e ${stop} ]; do i=$((i+1)); echo "rec $i" >> txn.log; done; echo $i`, prod);
  await sleep(500);
  a.down();
  const switched = await until('shipping over the second route', async () => {
    const s = await status(pstate);
    return s.route === routeB && s.connected === true;
  });
  t.ok(switched < 8000, `switched to the second route in ${switched} ms`);
  const before = (await status(pstate)).appliedSeq as number;
  await until('the backup applies over the second route', async () => ((await status(pstate)).appliedSeq as number) > before);

  a.up();
  const back = await until('back on the preferred route', async () => (await status(pstate)).route === routeA, 10_000);
  t.ok(back < 10_000, `returned to the preferred route in ${back} ms`);
  fs.writeFileSync(stop, '');
  const written = Number((await workload).trim());
  t.ok(written > 0, `the writer wrote ${written} records`);
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '30'])).code, 0);
  const lines = fs.readFileSync(path.join(dr, 'txn.log'), 'utf8').split('\n').filter(Boolean);
  t.same(lines, Array.from({ length: written }, (_, i) => `rec ${i + 1}`), 'every record once, in order');
  t.ok(((await status(pstate)).routeSwitches as number) >= 2, 'route switches are counted');
});

t.test('a corrupted frame is detected, never applied, and resent; a silent network is detected by heartbeats', async (t) => {
  const { dir, prod, dr, pstate, bstate, secret } = layout(t);
  const backup = await startBackup(t, { target: dr, state: path.join(dir, 'bstate'), secret });
  const proxy = await FaultProxy.start(backup.port);
  t.teardown(() => proxy.close());
  const primary = await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${proxy.port}`, secret });
  await primary.waitFor('connected to backup; shipping');
  t.equal((await drms(['sync', '--state', pstate])).code, 0);

  proxy.flipByte('toBackup', 40);
  await sh('head -c 200000 /dev/urandom > blob.bin', prod);
  const detected = await backup.waitFor('primary connection lost');
  t.match(JSON.stringify(detected), /checksum mismatch/, 'the backup detects the flipped byte');
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '30'])).code, 0, 'the primary resends and the backup catches up');
  t.equal(fs.readFileSync(path.join(dr, 'blob.bin')).compare(fs.readFileSync(path.join(prod, 'blob.bin'))), 0, 'the bytes on the backup are the bytes written');

  const mark = primary.logs.length;
  proxy.blackhole = true;
  const cutAt = Date.now();
  await primary.waitFor(/backup connection lost/, 15_000, mark);
  const noticed = Date.now() - cutAt;
  t.ok(noticed < 8000, `the silent peer was noticed in ${noticed} ms`);
  // Either side may notice first; the other side's log line can arrive a moment later.
  const heartbeatNoticed = async () => [...primary.logs, ...backup.logs].some((l) => /silent for/.test(JSON.stringify(l)));
  t.ok(await until('a heartbeat timeout in a log', heartbeatNoticed, 3000).then(() => true, () => false), 'a heartbeat timeout (on either side) is what noticed it');
  await sh('echo after-outage > after.txt', prod);
  proxy.up();
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '30'])).code, 0, 'shipping resumes when the network answers again');
  const [p, b] = [await snapshot(prod), await snapshot(dr)];
  t.same(b.entries, p.entries);
  t.same(mtimeDrift(p, b), []);
});
