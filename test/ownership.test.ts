// Operators' tools must never harm a running node: status during load, a second primary on the same state or mount.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { drms, isMounted, sh, startBackup, startPrimary, layout } from './helpers/cluster.js';

t.test('drms status during a workload, and a second primary, leave the running one alone', async (t) => {
  const { dir, prod, dr, pstate, bstate, secret } = layout(t);
  const backup = await startBackup(t, { target: dr, state: bstate, secret });
  const primary = await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret });

  const workload = sh('for i in $(seq 1 2000); do echo "rec $i" >> txn.log; done', prod);
  let answers = 0;
  for (let i = 0; i < 10; i++) {
    for (const state of [pstate, bstate]) {
      const r = await drms(['status', '--state', state, '--json']);
      if (r.code === 0 && JSON.parse(r.stdout).running === true) answers++;
    }
  }
  await workload;
  t.equal(answers, 20, 'every status call answered from the running nodes');
  t.equal(primary.proc.exitCode, null, 'the primary is still running');

  const sameState = await drms(['primary', '--mount', prod, '--state', pstate, '--to', `127.0.0.1:${backup.port}`, '--secret-file', secret]);
  t.equal(sameState.code, 2);
  t.match(sameState.stderr, /another drms process is running with --state/);
  const sameMount = await drms(['primary', '--mount', prod, '--state', path.join(dir, 'other'), '--to', `127.0.0.1:${backup.port}`, '--secret-file', secret]);
  t.equal(sameMount.code, 2);
  t.match(sameMount.stderr, /already mounted by a running drms/);
  const secondBackup = await drms(['backup', '--listen', '127.0.0.1:0', '--target', dr, '--state', bstate, '--secret-file', secret]);
  t.match(secondBackup.stderr, /another drms process is running with --state/);

  t.ok(isMounted(prod), 'the mount is still there');
  await sh('echo after > after.txt', prod);
  t.equal((await drms(['sync', '--state', pstate])).code, 0);
  t.equal(fs.readFileSync(path.join(dr, 'after.txt'), 'utf8'), 'after\n', 'and still mirrored');
  t.equal(fs.readFileSync(path.join(dr, 'txn.log'), 'utf8').split('\n').filter(Boolean).length, 2000);
});
