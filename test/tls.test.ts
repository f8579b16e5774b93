// Mutual TLS: both sides present certificates from one CA; a stranger's certificate, or none, is refused.
import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { drms, sh, startBackup, startNode, startPrimary, tmpdir, writeSecret } from './helpers/cluster.js';

const run = promisify(execFile);

/** A CA and a certificate signed by it for 127.0.0.1; returns the file paths. */
async function makeCerts(dir: string, name: string, ca?: { crt: string; key: string }) {
  const p = (f: string) => path.join(dir, `${name}.${f}`);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  if (!ca) {
    await run('openssl', ['req', '-x509', ...ec, '-keyout', p('key'), '-out', p('crt'), '-days', '2', '-subj', `/CN=${name}`]);
  } else {
    await run('openssl', ['req', ...ec, '-keyout', p('key'), '-out', p('csr'), '-subj', `/CN=${name}`]);
    fs.writeFileSync(p('ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    await run('openssl', ['x509', '-req', '-in', p('csr'), '-CA', ca.crt, '-CAkey', ca.key, '-CAcreateserial', '-out', p('crt'), '-days', '2', '-extfile', p('ext')]);
  }
  fs.chmodSync(p('key'), 0o600);
  return { crt: p('crt'), key: p('key') };
}

t.test('mutual TLS mirrors; a certificate from another CA, or plain TCP, is refused with the reason on both sides', async (t) => {
  const dir = tmpdir(t);
  const ca = await makeCerts(dir, 'ca');
  const rogueCa = await makeCerts(dir, 'rogue-ca');
  const [backupCert, primaryCert, rogueCert] = [await makeCerts(dir, 'backup', ca), await makeCerts(dir, 'primary', ca), await makeCerts(dir, 'rogue', rogueCa)];
  const tlsArgs = (c: { crt: string; key: string }, authority = ca) => ['--tls-cert', c.crt, '--tls-key', c.key, '--tls-ca', authority.crt];
  const [prod, dr] = [path.join(dir, 'prod'), path.join(dir, 'dr')];
  fs.mkdirSync(prod);
  fs.writeFileSync(path.join(prod, 'before.txt'), 'existing');

  // TLS alone, no shared secret.
  const backupNode = startNode(t, ['backup', '--listen', '127.0.0.1:0', '--target', dr, '--state', path.join(dir, 'bstate'), ...tlsArgs(backupCert)]);
  const port = Number(String((await backupNode.waitFor('backup listening')).listen).split(':').pop());

  const rogueState = path.join(dir, 'rogue-state');
  const rogueMount = path.join(dir, 'rogue-prod');
  fs.mkdirSync(rogueMount);
  const rogue = await startPrimary(t, { mount: rogueMount, state: rogueState, to: `127.0.0.1:${port}`, secret: '', extra: tlsArgs(rogueCert, ca) }).catch((e) => e as Error);
  t.notOk(rogue instanceof Error, 'a rogue primary still mounts (its own site keeps working)');
  const refusal = await backupNode.waitFor(/TLS handshake refused/);
  t.match(JSON.stringify(refusal), /peer/, 'the backup logs the refused peer');
  const rogueStatus = JSON.parse((await drms(['status', '--state', rogueState, '--json'])).stdout);
  t.equal(rogueStatus.connected, false);
  t.match(rogueStatus.lastError, /cannot reach the backup|handshake|certificate|alert|socket/i, `the rogue primary says why: ${rogueStatus.lastError}`);

  const plainSecret = writeSecret(dir);
  const plainState = path.join(dir, 'plain-state');
  const plainMount = path.join(dir, 'plain-prod');
  fs.mkdirSync(plainMount);
  await startPrimary(t, { mount: plainMount, state: plainState, to: `127.0.0.1:${port}`, secret: plainSecret });
  const plainSync = await drms(['sync', '--state', plainState, '--timeout', '3']);
  t.equal(plainSync.code, 1);
  t.match(plainSync.stderr, /is TLS configured alike on both sides/, 'plain TCP to a TLS backup: the primary says why');
  t.same(fs.readdirSync(dr), [], 'nothing from the refused primaries reached the target');

  await startPrimary(t, { mount: prod, state: path.join(dir, 'pstate'), to: `127.0.0.1:${port}`, secret: '', extra: tlsArgs(primaryCert) });
  await sh('echo over-tls > new.txt', prod);
  t.equal((await drms(['sync', '--state', path.join(dir, 'pstate'), '--timeout', '20'])).code, 0);
  t.equal(fs.readFileSync(path.join(dr, 'new.txt'), 'utf8'), 'over-tls\n');
  t.equal(fs.readFileSync(path.join(dr, 'before.txt'), 'utf8'), 'existing');
});

t.test('TLS flags go together, and a readable key is refused', async (t) => {
  const dir = tmpdir(t);
  const ca = await makeCerts(dir, 'ca');
  const cert = await makeCerts(dir, 'node', ca);
  const base = ['backup', '--listen', '127.0.0.1:0', '--target', path.join(dir, 'dr'), '--state', path.join(dir, 'b')];
  let r = await drms([...base, '--tls-cert', cert.crt]);
  t.match(r.stderr, /--tls-cert, --tls-key and --tls-ca go together/);
  fs.chmodSync(cert.key, 0o644);
  r = await drms([...base, '--tls-cert', cert.crt, '--tls-key', cert.key, '--tls-ca', ca.crt]);
  t.match(r.stderr, /--tls-key .* is accessible by group or others/);
  r = await drms(base);
  t.match(r.stderr, /give --secret-file, or --tls-cert/);
});
