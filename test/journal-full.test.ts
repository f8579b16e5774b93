// The primary's state disk fills up: operations are refused with ENOSPC before anything unjournaled is written,
// the operator is told, and mirroring goes on once there is room.
import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { drms, layout, startBackup, startPrimary } from './helpers/cluster.js';
import { snapshot } from './helpers/tree.js';

const run = promisify(execFile);

t.test('a full journal refuses writes with ENOSPC, loses nothing, and recovers when space returns', async (t) => {
  const { prod, dr, pstate, bstate, secret } = layout(t);
  fs.mkdirSync(pstate);
  await run('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'drms-test-journal', pstate]);
  t.teardown(() => run('umount', ['-l', pstate]).catch(() => undefined));
  const backup = await startBackup(t, { target: dr, state: bstate, secret });
  backup.proc.kill('SIGSTOP'); // the backup cannot drain, so the journal must hold everything
  t.teardown(() => backup.proc.kill('SIGCONT'));
  const primary = await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret });

  const dd = await run('dd', ['if=/dev/urandom', `of=${path.join(prod, 'big.bin')}`, 'bs=128k', 'count=40', 'status=none']).then(() => 'ok', (e: Error) => e.message);
  t.match(dd, /No space left on device/, 'the application is told the truth: no space');
  const logged = await primary.waitFor(/JOURNAL FULL/);
  t.match(String(logged.state), pstate, 'the log names the state directory');
  const size = fs.statSync(path.join(prod, 'big.bin')).size;
  t.equal(size % (128 * 1024), 0, `only whole journaled writes reached the file (${size} bytes)`);

  await run('mount', ['-o', 'remount,size=64m', pstate]);
  backup.proc.kill('SIGCONT');
  await run('sh', ['-c', `echo after > ${path.join(prod, 'after.txt')}`]);
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0, 'mirroring goes on with room again');
  t.same((await snapshot(dr)).entries, (await snapshot(prod)).entries, 'the backup has exactly what the primary has');
});
