// --max-backlog: with the backup away, writers are held at the cap (never silent loss) and go on when it returns.
import t from 'tap';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { drms, startBackup, startPrimary, layout } from './helpers/cluster.js';
import { snapshot } from './helpers/tree.js';

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((r) => server.close(r));
  return port;
}

t.test('writers wait at the backlog cap and resume when the backup drains it', async (t) => {
  const { dir, prod, dr, pstate, bstate, secret } = layout(t);
  const port = await freePort();
  const primary = await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${port}`, secret, extra: ['--max-backlog', '2M'] });

  const dd = spawn('dd', ['if=/dev/urandom', `of=${path.join(prod, 'big.bin')}`, 'bs=128k', 'count=48', 'status=none']);
  let ddDone = false;
  const ddExit = new Promise<number | null>((r) => dd.on('exit', (code) => ((ddDone = true), r(code))));
  t.teardown(() => dd.kill('SIGKILL'));
  await primary.waitFor(/BACKLOG CAP REACHED/);
  await sleep(1500);
  t.notOk(ddDone, 'the writer is held while the backup is away');
  const held = JSON.parse((await drms(['status', '--state', pstate, '--json'])).stdout);
  t.equal(held.backlogFull, true, 'status shows writers held at the cap');
  t.ok(held.backlogBytes >= 2 * 2 ** 20, `backlog ${held.backlogBytes} bytes is at the cap`);
  t.ok(held.backlogBytes < 16 * 2 ** 20, 'and not far past it');

  await startBackup(t, { target: dr, state: path.join(dir, 'bstate'), secret, port });
  t.equal(await ddExit, 0, 'the writer completes once the backup drains the backlog');
  await primary.waitFor(/writers resume/);
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '30'])).code, 0);
  t.same((await snapshot(dr)).entries, (await snapshot(prod)).entries, 'nothing was lost');
});
