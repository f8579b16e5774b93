// --max-backlog: with the backup away, writers are held at the cap (never silent loss) and go on when it returns.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { drms, freePort, layout, startBackup, startNode, startPrimary } from './helpers/cluster.js';
import { snapshot } from './helpers/tree.js';

const MiB = 2 ** 20;
// The native binding holds up to 16 MiB of captured entries before JavaScript takes them, and the cap is measured
// every 1 MiB: a writer that is far enough ahead is never held, so the writers here write well past all of that.
const BLOCKS = 320; // of 128 KiB: 40 MiB
const OVERSHOOT = 16 * MiB + 2 * MiB;

/** dd of `blocks` of 128 KiB into the mount: `exit` resolves with its exit code; `done()` says whether it has exited. */
function writer(t: Test, file: string, blocks = BLOCKS) {
  const dd = spawn('dd', ['if=/dev/urandom', `of=${file}`, 'bs=128k', `count=${blocks}`, 'status=none']);
  let exited = false;
  const exit = new Promise<number | null>((r) => dd.on('exit', (code) => ((exited = true), r(code))));
  t.teardown(() => dd.kill('SIGKILL'));
  return { exit, done: () => exited };
}

t.test('writers wait at the backlog cap and resume when the backup drains it', async (t) => {
  const { dir, prod, dr, pstate, secret } = layout(t);
  const port = await freePort();
  const primary = await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${port}`, secret, extra: ['--max-backlog', '2M'] });

  const dd = writer(t, path.join(prod, 'big.bin'));
  await primary.waitFor(/BACKLOG CAP REACHED/);
  await sleep(1500);
  t.notOk(dd.done(), 'the writer is held while the backup is away');
  const held = JSON.parse((await drms(['status', '--state', pstate, '--json'])).stdout);
  t.equal(held.backlogFull, true, 'status shows writers held at the cap');
  t.ok(held.backlogBytes >= 2 * MiB, `backlog ${held.backlogBytes} bytes is at the cap`);
  t.ok(held.backlogBytes < 2 * MiB + OVERSHOOT, 'and not past it by more than what was in flight');

  await startBackup(t, { target: dr, state: path.join(dir, 'bstate'), secret, port });
  t.equal(await dd.exit, 0, 'the writer completes once the backup drains the backlog');
  await primary.waitFor(/writers resume/);
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0);
  t.same((await snapshot(dr)).entries, (await snapshot(prod)).entries, 'nothing was lost');
});

t.test('a cap reached by writes already done is declared, and a reload that lifts it lets held writers go on', async (t) => {
  const { dir, prod, pstate, secret } = layout(t);
  const config = path.join(dir, 'drms.json');
  const set = { name: 'atm', mount: prod, state: pstate, to: [`127.0.0.1:${await freePort()}`], secretFile: secret, maxBacklog: '2M' };
  fs.writeFileSync(config, JSON.stringify({ sets: [set] }));
  const primary = startNode(t, ['primary', '--config', config], prod);
  await primary.waitFor('mounted');

  // 3 MiB: the native binding may capture all of it before JavaScript measures the backlog.
  const first = writer(t, path.join(prod, 'first.bin'), 24);
  await primary.waitFor(/BACKLOG CAP REACHED/, 5000);
  const dd = writer(t, path.join(prod, 'big.bin'));
  await sleep(1000);
  t.notOk(dd.done(), 'a writer that starts after the cap was reached is held');
  t.equal(JSON.parse((await drms(['status', '--state', pstate, '--json'])).stdout).backlogFull, true, 'status shows writers held');

  fs.writeFileSync(config, JSON.stringify({ sets: [{ ...set, maxBacklog: '0' }] }));
  primary.proc.kill('SIGHUP');
  t.equal(await first.exit, 0);
  t.equal(await dd.exit, 0, 'the writers complete with no backup: the cap is gone');
  await primary.waitFor(/writers resume/);
  const s = JSON.parse((await drms(['status', '--state', pstate, '--json'])).stdout);
  t.equal(s.backlogFull, false, 'status no longer shows writers held');
  t.ok(s.backlogBytes >= 43 * MiB, 'everything written is in the journal, waiting for the backup');
});
