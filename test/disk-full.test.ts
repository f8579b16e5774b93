// The backup's disk fills up: it says so, applies nothing partial it cannot finish, and converges once there is room.
import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { drms, sh, startBackup, startPrimary, tmpdir, writeSecret } from './helpers/cluster.js';
import { snapshot } from './helpers/tree.js';

const run = promisify(execFile);

t.test('a full disk on the backup is reported and survived', async (t) => {
  const dir = tmpdir(t);
  const [prod, dr, pstate] = [path.join(dir, 'prod'), path.join(dir, 'dr'), path.join(dir, 'pstate')];
  fs.mkdirSync(prod);
  fs.mkdirSync(dr);
  await run('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'drms-test-full', dr]);
  t.teardown(() => run('umount', ['-l', dr]).catch(() => undefined));
  const secret = writeSecret(dir);
  const backup = await startBackup(t, { target: dr, state: path.join(dir, 'bstate'), secret });
  await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret });

  await sh('head -c 1000000 /dev/urandom > small.bin; head -c 4000000 /dev/urandom > big.bin; echo after > after.txt', prod);
  const full = await backup.waitFor(/primary session ended/);
  t.match(JSON.stringify(full), /ENOSPC|no space left/i, 'the backup reports the full disk');
  const sync = await drms(['sync', '--state', pstate, '--timeout', '3']);
  t.equal(sync.code, 1, 'drms sync does not pretend');
  t.match(sync.stderr, /ops behind/);
  const status = JSON.parse((await drms(['status', '--state', pstate, '--json'])).stdout);
  t.match(status.lastError, /ENOSPC|no space/i, `the primary shows why: ${status.lastError}`);
  t.ok(status.lagOps > 0, 'and the backlog it keeps');

  await run('mount', ['-o', 'remount,size=20m', dr]);
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0, 'with room again, the backup catches up by itself');
  t.same((await snapshot(dr)).entries, (await snapshot(prod)).entries, 'identical');
});
