// Failover and failback with real processes: a planned switchover under load and back, an emergency promotion
// with the old primary fenced, quarantined and converged, and two sites mirroring to each other.
import t from 'tap';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FrameType, unpackBody, type Frame } from '../dist/wire/frame.js';
import { connectAsPrimary, sendEntries } from './helpers/batch.js';
import { drms, freeMount, freePort, layout, sh, startBackup, startPrimary } from './helpers/cluster.js';
import { FaultProxy } from './helpers/fault-proxy.js';
import { snapshot } from './helpers/tree.js';

const status = async (state: string) => JSON.parse((await drms(['status', '--state', state, '--json'])).stdout) as Record<string, unknown>;
const lines = (file: string) => fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);

t.test('planned switchover under a running workload: nothing acknowledged is lost, the pause is reported, the directions reverse and return', async (t) => {
  const { dir, prod, dr, pstate, bstate, secret } = layout(t);
  // Known ports: each site serves as the backup on its own address, before and after a switchover.
  const [aPort, bPort] = [await freePort(), await freePort()];
  const backup = await startBackup(t, { target: dr, state: bstate, secret, port: bPort, extra: ['--to', `127.0.0.1:${aPort}`] });
  const primary = await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret, extra: ['--listen', `127.0.0.1:${aPort}`] });
  await primary.waitFor('connected to backup; shipping');
  t.equal((await drms(['sync', '--state', pstate])).code, 0);

  const acks = path.join(dir, 'acks');
  const writer = spawn(process.execPath, [path.resolve(import.meta.dirname, 'fixtures/moving-writer.mjs'), `${prod},${dr}`, 'txn.log', acks, '300'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => writer.kill('SIGKILL'));
  let writerOut = '';
  writer.stdout.on('data', (d) => (writerOut += d));
  writer.stderr.on('data', (d) => (writerOut += d));
  const writerDone = new Promise<number | null>((r) => writer.on('exit', r));
  while (!fs.existsSync(acks) || lines(acks).length < 100) await sleep(50);

  const sw = await drms(['switchover', '--state', pstate, '--json']);
  t.equal(sw.code, 0, `${sw.stderr}; the primary's ${primary.lastLines(30)}`);
  const result = JSON.parse(sw.stdout) as { epoch: number; pauseMs: number };
  t.equal(result.epoch, 2, 'the backup took over at epoch 2');
  t.ok(result.pauseMs >= 0 && result.pauseMs < 10_000, `application pause reported: ${result.pauseMs} ms`);
  t.ok(primary.logs.some((l) => l.event === 'switchover' && l.pauseMs === result.pauseMs), 'the pause is logged as a switchover event');

  t.equal(await writerDone, 0, `the application moved to the new primary and finished: ${writerOut}`);
  t.match(writerOut, /moved at \d+/, 'the old primary refused writes once switched over (EROFS)');
  t.equal((await drms(['sync', '--state', bstate, '--timeout', '60'])).code, 0, 'the new primary\'s backup (the old primary) caught up');

  const acked = lines(acks).map(Number);
  const onNew = lines(path.join(dr, 'txn.log'));
  t.same(acked, Array.from({ length: Number(/done at (\d+)/.exec(writerOut)?.[1]) }, (_, i) => i + 1), 'every record acknowledged once');
  t.same(onNew, acked.map((n) => `rec ${n}`), 'every acknowledged record exactly once, in order, on the new primary');
  t.same(lines(path.join(prod, 'txn.log')), onNew, 'and on the old primary, now its backup');

  const [ps, bs] = [await status(pstate), await status(bstate)];
  t.match(ps, { role: 'backup', epoch: 2, peerEpoch: 2, connected: true }, 'the old primary is the backup at epoch 2');
  t.match(bs, { role: 'primary', epoch: 2, peerEpoch: 2, connected: true, mount: dr }, 'the old backup is the primary at epoch 2');
  const verified = await drms(['verify', '--state', bstate]);
  t.equal(verified.code, 0, `verified identical in the reversed direction: ${verified.stdout}`);
  t.same((await snapshot(prod)).entries, (await snapshot(dr)).entries, 'trees identical');

  // A later switchover returns the roles.
  const back = await drms(['switchover', '--state', bstate, '--json']);
  t.equal(back.code, 0, back.stderr);
  t.equal((JSON.parse(back.stdout) as { epoch: number }).epoch, 3);
  await sh('echo "rec back" >> txn.log', prod);
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0);
  t.equal(lines(path.join(dr, 'txn.log')).at(-1), 'rec back', 'writes on the original primary reach the original backup again');
  t.match(await status(pstate), { role: 'primary', epoch: 3 });
  t.match(await status(bstate), { role: 'backup', epoch: 3 });
  t.equal((await drms(['verify', '--state', pstate])).code, 0, 'verified identical in the original direction');
  await t.rejects(sh('echo no >> txn.log', dr), 'the DR copy is read-only while it is the backup');
});

t.test('a site that took over applies nothing its old primary sent after the Promote: its own thread would wait on its mount', async (t) => {
  const { dr, bstate, secret } = layout(t);
  const backup = await startBackup(t, { target: dr, state: bstate, secret, extra: ['--to', `127.0.0.1:${await freePort()}`] });
  const { conn, reply } = await connectAsPrimary(backup.port, Buffer.from(fs.readFileSync(secret, 'utf8')), 'old-journal');
  t.teardown(() => conn.close());
  t.equal(FrameType[reply.type], 'Welcome');
  sendEntries(conn, [
    { seq: 1, op: 'create', path: '/f', mode: 0o644, uid: 0, gid: 0 },
    { seq: 2, op: 'write', path: '/f', offset: 0, data: Buffer.from('before') },
  ]);
  t.match(unpackBody((await conn.read(5000))!), { appliedSeq: 2 }, 'applied');
  conn.send(FrameType.Promote, { id: 1, epoch: 2 });
  // Right behind it, as the times of a file an application closed during the switchover would come.
  sendEntries(conn, [{ seq: 3, op: 'times', path: '/f', stamps: [['/f', [1_000_000, 0], [1_000_000, 0]]] }]);
  const frames: Frame[] = [];
  for (let f; (f = await conn.read(30_000)); ) frames.push(f);
  t.ok(frames.some((f) => f.type === FrameType.Promoted && unpackBody<{ error?: string }>(f).error === undefined), 'it took over');
  t.notOk(frames.some((f) => f.type === FrameType.Ack && unpackBody<{ appliedSeq: number }>(f).appliedSeq >= 3), 'the entry after the Promote was not applied');
  t.ok(conn.closed, 'and the session ended');
  const st = await drms(['status', '--state', bstate, '--json']);
  t.equal(st.code, 0, `the new primary answers: ${st.stderr}`);
  t.match(JSON.parse(st.stdout), { role: 'primary', epoch: 2, mount: dr });
  t.equal(fs.readFileSync(path.join(dr, 'f'), 'utf8'), 'before', 'its mount serves the file');
  t.not(Math.floor(fs.statSync(path.join(dr, 'f')).mtimeMs / 1000), 1_000_000, 'with the times it had, not those sent after the Promote');
});

t.test('emergency failover: the old primary is fenced, rejoins as backup, its unreplicated writes are quarantined, and it converges', async (t) => {
  const { prod, dr, pstate, bstate, secret } = layout(t);
  const aPort = await freePort();
  const backup = await startBackup(t, { target: dr, state: bstate, secret, extra: ['--to', `127.0.0.1:${aPort}`] });
  const proxy = await FaultProxy.start(backup.port);
  t.teardown(() => proxy.close());
  const primary = await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${proxy.port}`, secret });
  await sh('mkdir -p logs && for i in $(seq 1 50); do echo "rec $i" >> logs/txn.log; done; echo v1 > table.tab', prod);
  t.equal((await drms(['sync', '--state', pstate])).code, 0);

  // The network to the DR site goes silent; the primary goes on journaling what will never arrive, then dies.
  proxy.blackhole = true;
  await sh('echo "rec lost" >> logs/txn.log; echo v2-unreplicated > table.tab; echo only-here > lost.cm', prod);
  primary.proc.kill('SIGKILL');
  await primary.exited;
  await freeMount(prod);

  const promoted = await drms(['promote', '--state', bstate, '--mount', dr]);
  t.equal(promoted.code, 0, promoted.stderr);
  t.match(promoted.stdout, /primary at epoch 2/);
  t.match(await status(bstate), { role: 'primary', epoch: 2, mount: dr });
  await sh('echo "rec new-primary" >> logs/txn.log; echo v3-new-primary > table.tab; echo b > new.c', dr);

  // The old primary comes back as primary (say, its init system restarts it): refused, fenced, read-only.
  const stale = await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret });
  const fenced = await stale.waitFor(/^FENCED/);
  t.match(String(fenced.msg), /epoch 2 refused this primary \(epoch 1\)/, 'told why: a site at a newer epoch');
  await t.rejects(sh('echo after-fence >> table.tab', prod), 'its mount refuses writes once fenced');
  t.match(await status(pstate), { role: 'primary', superseded: { epoch: 2 }, readOnly: /fenced/ });
  t.ok(backup.logs.some((l) => l.msg === 'stale primary refused (fenced)'), 'the new primary logged the refusal');
  stale.proc.kill('SIGTERM');
  t.equal(await stale.exited, 0);
  const again = await drms(['primary', '--mount', prod, '--state', pstate, '--to', `127.0.0.1:${backup.port}`, '--secret-file', secret]);
  t.equal(again.code, 2, 'a fenced site cannot start as primary again');
  t.match(again.stderr, /fenced at epoch 2/);

  // The promoted site restarts as a plain primary: same journal and epoch, still refusing the old epoch on the
  // backup's address (--listen).
  backup.proc.kill('SIGTERM');
  t.equal(await backup.exited, 0);
  const restarted = await startPrimary(t, { mount: dr, state: bstate, to: `127.0.0.1:${aPort}`, secret, extra: ['--listen', `127.0.0.1:${backup.port}`] });
  t.match(await status(bstate), { role: 'primary', epoch: 2 });

  // It rejoins as the backup of the new primary.
  const rejoined = await startBackup(t, { target: prod, state: pstate, secret, port: aPort });
  await rejoined.waitFor(/^QUARANTINED/, 20_000);
  t.equal((await drms(['sync', '--state', bstate, '--timeout', '60'])).code, 0, 'converged');
  t.ok(restarted.logs.some((l) => l.msg === 'connected to backup; shipping'), 'the new primary ships to the old one');
  const ps = await status(pstate);
  t.match(ps, { role: 'backup', epoch: 2 });
  const quarantines = ps.quarantines as Array<{ dir: string; fromSeq: number }>;
  t.equal(quarantines.length, 1, 'one quarantine, listed in status');
  const q = JSON.parse(fs.readFileSync(path.join(quarantines[0]!.dir, 'quarantine.json'), 'utf8')) as { entries: Array<{ op: string; path?: string }>; files: string[] };
  const touched = new Set(q.entries.map((e) => e.path));
  t.ok(['/logs/txn.log', '/table.tab', '/lost.cm'].every((p) => touched.has(p)), `the unreplicated operations are listed: ${[...touched].join(' ')}`);
  t.equal(fs.readFileSync(path.join(quarantines[0]!.dir, 'files/table.tab'), 'utf8'), 'v2-unreplicated\n', 'a copy of each file as the old primary left it');
  t.equal(fs.readFileSync(path.join(quarantines[0]!.dir, 'files/lost.cm'), 'utf8'), 'only-here\n');
  t.notOk(fs.existsSync(path.join(prod, 'lost.cm')), 'the old primary\'s directory no longer has what the new primary never had');
  t.equal(fs.readFileSync(path.join(prod, 'table.tab'), 'utf8'), 'v3-new-primary\n');
  t.same(lines(path.join(prod, 'logs/txn.log')).slice(-2), ['rec 50', 'rec new-primary']);
  const verified = await drms(['verify', '--state', bstate]);
  t.equal(verified.code, 0, `verify is clean: ${verified.stdout}`);
  t.same((await snapshot(prod)).entries, (await snapshot(dr)).entries, 'trees identical');
});

t.test('two sites, each primary for one set and backup for the other, under load, identical both ways; a DR copy read by tests stays a backup', async (t) => {
  const { dir, secret } = layout(t);
  const site = (s: string, d: string) => path.join(dir, s, d);
  for (const d of [site('east', 'atm'), site('west', 'cards')]) fs.mkdirSync(d, { recursive: true });
  // atm: primary east, backup west; cards: primary west, backup east. One process per set and role.
  const atmBackup = await startBackup(t, { target: site('west', 'atm'), state: site('west', 'atm.state'), secret });
  const cardsBackup = await startBackup(t, { target: site('east', 'cards'), state: site('east', 'cards.state'), secret });
  await startPrimary(t, { mount: site('east', 'atm'), state: site('east', 'atm.pstate'), to: `127.0.0.1:${atmBackup.port}`, secret, extra: ['--listen', `127.0.0.1:${await freePort()}`] });
  await startPrimary(t, { mount: site('west', 'cards'), state: site('west', 'cards.pstate'), to: `127.0.0.1:${cardsBackup.port}`, secret });
  const load = (where: string) => sh(`
    for i in $(seq 1 400); do
      echo "txn $i" >> txn.log
      if (( i % 40 == 0 )); then mkdir -p batch$i && echo $i > batch$i/t.tab && mv batch$i/t.tab batch$i/final.tab; fi
    done`, where);
  // A read-only view of a DR copy for reports, while it stays a backup: the kernel's read-only bind mount.
  const view = site('west', 'atm-view');
  fs.mkdirSync(view);
  await sh(`mount --bind ${site('west', 'atm')} ${view} && mount -o remount,bind,ro ${view}`, dir);
  t.teardown(() => sh(`umount ${view}`, dir).catch(() => undefined));
  await Promise.all([load(site('east', 'atm')), load(site('west', 'cards'))]);
  for (const state of [site('east', 'atm.pstate'), site('west', 'cards.pstate')]) {
    t.equal((await drms(['sync', '--state', state, '--timeout', '60'])).code, 0);
    const v = await drms(['verify', '--state', state]);
    t.equal(v.code, 0, `verify ${path.basename(state)}: ${v.stdout}`);
  }
  t.same((await snapshot(site('west', 'atm'))).entries, (await snapshot(site('east', 'atm'))).entries, 'atm identical east → west');
  t.same((await snapshot(site('east', 'cards'))).entries, (await snapshot(site('west', 'cards'))).entries, 'cards identical west → east');
  t.equal(lines(path.join(view, 'txn.log')).length, 400, 'the read-only view shows the DR copy as applied');
  await t.rejects(sh('echo x >> txn.log', view), 'the view refuses writes');
  // A switchover the backup cannot carry out (it has no address to ship to) is abandoned: nothing changes.
  const refused = await drms(['switchover', '--state', site('east', 'atm.pstate'), '--timeout', '10']);
  t.equal(refused.code, 1);
  t.match(refused.stderr, /abandoned, this site stays the primary.*no address to ship to/);
  t.match(await status(site('east', 'atm.pstate')), { role: 'primary', epoch: 1, peerEpoch: 1, connected: true });
  await sh('echo "txn 401" >> txn.log', site('east', 'atm'));
  t.equal((await drms(['sync', '--state', site('east', 'atm.pstate')])).code, 0);
  t.equal(lines(path.join(view, 'txn.log')).at(-1), 'txn 401', 'the backup keeps applying beneath the view');
});
