// Configuration from a config file, and SIGHUP: routes, credentials, policy and mode change without unmounting,
// while an application keeps a file open and writing; a bad reload is refused and the old configuration stays.
import t from 'tap';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { drms, layout, sh, startBackup, startNode } from './helpers/cluster.js';
import { FaultProxy } from './helpers/fault-proxy.js';

const status = async (state: string) => JSON.parse((await drms(['status', '--state', state, '--json'])).stdout);

function mountId(dir: string): string | undefined {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === dir)?.split(' ')[0];
}

t.test('SIGHUP applies a new route, policy and mode from the config file without unmounting', async (t) => {
  const { dir, prod, dr, pstate, bstate, secret } = layout(t);
  const backup = await startBackup(t, { target: dr, state: bstate, secret });
  const proxy = await FaultProxy.start(backup.port);
  t.teardown(() => proxy.close());
  const policyFile = path.join(dir, 'policy.yaml');
  fs.writeFileSync(policyFile, 'exclude: ["*.tmp"]\n');
  const config = path.join(dir, 'drms.json');
  const set = { name: 'atm', mount: prod, state: pstate, to: [`127.0.0.1:${proxy.port}`], secretFile: secret, policy: policyFile };
  fs.writeFileSync(config, JSON.stringify({ sets: [set] }));
  const primary = startNode(t, ['primary', '--config', config], prod);
  await primary.waitFor('mounted');
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0);
  const before = mountId(prod);
  t.ok(before, 'mounted from the config file');

  // An application with a file open, appending, for the whole test.
  const app = spawn('bash', ['-c', 'exec 3>>ledger.log; for i in $(seq 1 400); do echo "txn $i" >&3; sleep 0.01; done'], { cwd: prod, stdio: 'ignore' });
  const appDone = new Promise((r) => app.on('exit', r));
  await sh('echo scratch > work.tmp', prod);

  fs.writeFileSync(config, JSON.stringify({ sets: [{ ...set, to: [`127.0.0.1:${backup.port}`], mode: 'sync', policy: undefined }] }));
  const from = primary.logs.length;
  primary.proc.kill('SIGHUP');
  const reloaded = await primary.waitFor(/^configuration reloaded/, 10_000, from);
  t.match(reloaded.msg, /\(to, mode, policy\); the policy changed: copying the difference/, 'the reload says what changed');
  await primary.waitFor('connected to backup; shipping', 10_000, from);
  proxy.refusing = true;
  proxy.dropAll();
  await appDone;
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0, 'mirroring continues over the new route with the old one gone');
  const s = await status(pstate);
  t.equal(s.route, `127.0.0.1:${backup.port}`);
  t.equal(s.mode, 'sync');
  t.equal(mountId(prod), before, 'the same mount throughout: nothing was unmounted');
  t.equal(fs.readFileSync(path.join(dr, 'ledger.log'), 'utf8').split('\n').filter(Boolean).length, 400, 'every write of the open file reached the backup');
  t.equal(fs.readFileSync(path.join(dr, 'work.tmp'), 'utf8'), 'scratch\n', 'the new policy mirrors what the old excluded');

  // A broken configuration is refused; the running one stays.
  fs.writeFileSync(config, '{"sets": [{"name": "atm", "mount": "x"');
  const bad = primary.logs.length;
  primary.proc.kill('SIGHUP');
  const refused = await primary.waitFor(/^configuration reload refused/, 10_000, bad);
  t.match(refused.msg, /config .*drms\.json/);
  await sh('echo after > after.txt', prod);
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '30'])).code, 0);
  t.equal(fs.readFileSync(path.join(dr, 'after.txt'), 'utf8'), 'after\n', 'still mirroring with the previous configuration');
});

t.test('config file mistakes name the file and the key', async (t) => {
  const { dir, prod, pstate, secret } = layout(t);
  const cases: Array<[string, unknown, RegExp]> = [
    ['unknown key', { sets: [{ name: 'a', mount: prod, state: pstate, to: '127.0.0.1:9', secretFile: secret, mdoe: 'sync' }] }, /sets\[0\]: unknown key "mdoe"/],
    ['missing mount', { sets: [{ name: 'a', state: pstate, to: '127.0.0.1:9' }] }, /sets\[0\]: "mount" is missing/],
    ['no sets', { mounts: [] }, /expected \{"sets": \[ \.\.\. \]\}/],
    ['two sets, none chosen', { sets: [{ name: 'a', mount: prod, state: pstate, to: '127.0.0.1:9' }, { name: 'b', mount: prod, state: pstate, to: '127.0.0.1:9' }] }, /holds 2 sets \(a, b\): give --set NAME/],
  ];
  for (const [name, doc, message] of cases) {
    const file = path.join(dir, `${name.replace(/\W+/g, '-')}.json`);
    fs.writeFileSync(file, JSON.stringify(doc));
    const r = await drms(['primary', '--config', file]);
    t.equal(r.code, 2, name);
    t.match(r.stderr, message, `${name}: ${r.stderr.trim()}`);
  }
  const both = await drms(['primary', '--config', path.join(dir, 'x.json'), '--mount', prod]);
  t.match(both.stderr, /give either --config or --mount/);
});
