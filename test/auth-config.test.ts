// Refusals: a wrong secret leaves the target untouched and both sides say why; config mistakes stop before mounting.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { drms, isMounted, sh, startBackup, startPrimary, tmpdir, writeSecret } from './helpers/cluster.js';

t.test('a primary with the wrong secret is refused, and the target is untouched', async (t) => {
  const dir = tmpdir(t);
  const prod = path.join(dir, 'prod');
  const dr = path.join(dir, 'dr');
  fs.mkdirSync(prod);
  fs.writeFileSync(path.join(prod, 'existing.txt'), 'data');
  const backup = await startBackup(t, { target: dr, state: path.join(dir, 'bstate'), secret: writeSecret(dir, 'secret-a') });
  const primary = await startPrimary(t, { mount: prod, state: path.join(dir, 'pstate'), to: `127.0.0.1:${backup.port}`, secret: writeSecret(dir, 'secret-b') });
  await sh('echo local > new.txt', prod);
  t.equal(fs.readFileSync(path.join(prod, 'new.txt'), 'utf8'), 'local\n', 'the application keeps working while the backup refuses');

  const pLine = await primary.waitFor('backup handshake failed');
  t.match(JSON.stringify(pLine), /failed authentication: wrong shared secret/, 'primary says why');
  const bLine = await backup.waitFor('primary session ended');
  t.match(JSON.stringify(bLine), /shared secrets differ/, 'backup says why');
  t.same(fs.readdirSync(dr), [], 'nothing was written to the target');

  const status = JSON.parse((await drms(['status', '--state', path.join(dir, 'pstate'), '--json'])).stdout);
  t.equal(status.connected, false);
  t.match(status.lastError, /wrong shared secret/);
  const sync = await drms(['sync', '--state', path.join(dir, 'pstate'), '--timeout', '1']);
  t.equal(sync.code, 1);
  t.match(sync.stderr, /timed out after 1 s: .*not connected \(.*wrong shared secret/);
  const logText = [...primary.logs, ...backup.logs].map((l) => JSON.stringify(l)).join('\n');
  t.notMatch(logText, fs.readFileSync(path.join(dir, 'secret-a'), 'utf8'), 'secret never logged');
  t.notMatch(logText, fs.readFileSync(path.join(dir, 'secret-b'), 'utf8'), 'secret never logged');
});

t.test('config mistakes give a clear message and mount nothing', async (t) => {
  const dir = tmpdir(t);
  const prod = path.join(dir, 'prod');
  fs.mkdirSync(prod);
  const good = writeSecret(dir);
  const open = path.join(dir, 'open-secret');
  fs.writeFileSync(open, 'a-secret-that-others-can-read');
  fs.chmodSync(open, 0o644);
  const base = ['primary', '--mount', prod, '--state', path.join(dir, 'pstate')];
  const cases: Array<[string[], RegExp]> = [
    [[...base, '--to', '127.0.0.1:1', '--secret-file', open], /accessible by group or others.*chmod 600/],
    [[...base, '--to', '127.0.0.1:1', '--secret-file', path.join(dir, 'missing')], /cannot read secret file/],
    [[...base, '--to', 'no-port-here', '--secret-file', good], /--to: "no-port-here" is not HOST:PORT/],
    [[...base, '--to', '127.0.0.1:1', '--secret-file', good, '--mode', 'fast'], /Allowed choices are async, sync/],
    [['primary', '--mount', path.join(dir, 'nope'), '--state', path.join(dir, 's2'), '--to', '127.0.0.1:1', '--secret-file', good], /--mount .* does not exist/],
    [['primary', '--mount', prod, '--state', path.join(prod, 'state'), '--to', '127.0.0.1:1', '--secret-file', good], /--state must not be inside --mount/],
    [['backup', '--listen', '127.0.0.1:99999', '--target', path.join(dir, 'dr'), '--state', path.join(dir, 'b'), '--secret-file', good], /--listen/],
    [['backup', '--listen', '127.0.0.1:0', '--target', path.join(dir, 'dr'), '--state', path.join(dir, 'dr', 'st'), '--secret-file', good], /must not contain each other/],
    [[...base, '--to', '127.0.0.1:1', '--secret-file', good, '--nice', '-30'], /--nice must be a whole number from -20 to 19, not "-30"/],
    [['backup', '--listen', '127.0.0.1:0', '--target', path.join(dir, 'dr'), '--state', path.join(dir, 'b'), '--secret-file', good, '--nice', 'high'], /--nice must be a whole number from -20 to 19, not "high"/],
  ];
  for (const [args, message] of cases) {
    const r = await drms(args);
    t.not(r.code, 0, args.join(' '));
    t.match(r.stderr, message, args.join(' '));
    t.notOk(isMounted(prod));
  }
});
