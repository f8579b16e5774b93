// An authenticated client sending hostile frames: nothing may be written outside the target.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { encodeEntry } from '../dist/journal/entry.js';
import { encodeBatch, FrameType, unpackBody } from '../dist/wire/frame.js';
import { PeerConnection } from '../dist/wire/peer.js';
import { sendBatch, type Entry } from './helpers/batch.js';
import { startBackup, tmpdir, writeSecret } from './helpers/cluster.js';

t.test('hostile entries from an authenticated peer never write outside the target', async (t) => {
  const dir = tmpdir(t);
  const dr = path.join(dir, 'dr');
  const outside = path.join(dir, 'outside');
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(outside, 'victim'), 'original');
  const secretFile = writeSecret(dir);
  const secret = Buffer.from(fs.readFileSync(secretFile, 'utf8'));
  const backup = await startBackup(t, { target: dr, state: path.join(dir, 'bstate'), secret: secretFile });
  const id = 'rogue-journal';
  const send = (entries: Array<Entry | Buffer>) => sendBatch(backup.port, secret, id, entries);

  // Legitimate-looking setup: symlinks are data, so they are applied as they are.
  let r = await send([
    { seq: 1, op: 'symlink', path: '/out', target: outside, uid: 0, gid: 0 },
    { seq: 2, op: 'symlink', path: '/v', target: path.join(outside, 'victim'), uid: 0, gid: 0 },
    { seq: 3, op: 'mkdir', path: '/d', mode: 0o755, uid: 0, gid: 0 },
  ]);
  t.same(r.body, { appliedSeq: 3 });
  r = await send([{ seq: 3, op: 'mkdir', path: '/d', mode: 0o755, uid: 0, gid: 0 }]);
  t.same([r.type, r.body], ['Ack', { appliedSeq: 3 }], 'a batch of entries applied already is answered (the primary waits for it)');

  const refusals: Array<[string, Entry[], RegExp]> = [
    ['dot-dot', [{ seq: 4, op: 'create', path: '/../escaped', mode: 0o644, uid: 0, gid: 0 }], /"\.\." component/],
    ['dot-dot deeper', [{ seq: 4, op: 'mkdir', path: '/d/../../escaped', mode: 0o755, uid: 0, gid: 0 }], /"\.\." component/],
    ['relative', [{ seq: 4, op: 'create', path: 'escaped', mode: 0o644, uid: 0, gid: 0 }], /not rooted/],
    ['through a symlink', [{ seq: 4, op: 'create', path: '/out/escaped', mode: 0o644, uid: 0, gid: 0 }], /through a symlink at \/out/],
    ['rename out', [{ seq: 4, op: 'rename', path: '/d', to: '/../escaped' }], /"\.\." component/],
    ['link out', [{ seq: 4, op: 'link', path: '/v', to: '/out/escaped' }], /through a symlink/],
    ['NUL', [{ seq: 4, op: 'create', path: '/a\0b', mode: 0o644, uid: 0, gid: 0 }], /NUL/],
    ['not a string', [{ seq: 4, op: 'unlink', path: 42 as unknown as string }], /not a string/],
    ['root itself', [{ seq: 4, op: 'rmdir', path: '/' }], /target root/],
    ['gap', [{ seq: 9, op: 'mkdir', path: '/g', mode: 0o755, uid: 0, gid: 0 }], /sequence gap: expected seq 4, got 9/],
    ['unknown op', [{ seq: 4, op: 'format-disk' as never, path: '/x' }], /unknown operation/],
  ];
  for (const [name, entries, message] of refusals) {
    r = await send(entries);
    t.equal(r.type, 'Error', `${name}: refused`);
    t.match(String(r.body.message), message, `${name}: says why`);
  }
  r = await send([Buffer.from('not msgpack at all \xc1\xc1')]);
  t.equal(r.type, 'Error');
  t.match(String(r.body.message), /undecodable journal entry/);

  // Writes aimed at a symlink's target are not followed: the victim is unchanged.
  r = await send([
    { seq: 4, op: 'write', path: '/v', offset: 0, data: Buffer.from('PWNED') },
    { seq: 5, op: 'truncate', path: '/v', size: 0 },
    { seq: 6, op: 'chmod', path: '/v', mode: 0o777 },
    { seq: 7, op: 'setxattr', path: '/v', name: 'user.x', value: Buffer.from('y') },
  ]);
  t.same(r.body, { appliedSeq: 7 }, 'applied as divergences, not followed');
  t.equal(fs.readFileSync(path.join(outside, 'victim'), 'utf8'), 'original', 'victim content unchanged');
  t.equal(fs.statSync(path.join(outside, 'victim')).mode & 0o777, 0o644, 'victim mode unchanged');
  t.same(fs.readdirSync(outside).sort(), ['victim'], 'nothing created outside');
  t.notOk(fs.existsSync(path.join(dir, 'escaped')), 'nothing created beside the target');

  // A path checked once is not trusted after names change: its directory replaced by a symlink is seen.
  r = await send([
    { seq: 8, op: 'create', path: '/d/f', mode: 0o644, uid: 0, gid: 0 },
    { seq: 9, op: 'write', path: '/d/f', offset: 0, data: Buffer.from('one') },
    { seq: 10, op: 'rename', path: '/d', to: '/d2' },
    { seq: 11, op: 'symlink', path: '/d', target: outside, uid: 0, gid: 0 },
  ]);
  t.same(r.body, { appliedSeq: 11 });
  r = await send([{ seq: 12, op: 'write', path: '/d/f', offset: 0, data: Buffer.from('two') }]);
  t.equal(r.type, 'Error', 'a write to a path checked before its directory became a symlink: refused');
  t.match(String(r.body.message), /through a symlink at \/d/);
  t.same(fs.readdirSync(outside).sort(), ['victim'], 'nothing created outside');
  t.equal(fs.readFileSync(path.join(dr, 'd2', 'f'), 'utf8'), 'one');
});

t.test('an unauthenticated peer cannot send a batch', async (t) => {
  const dir = tmpdir(t);
  const dr = path.join(dir, 'dr');
  const backup = await startBackup(t, { target: dr, state: path.join(dir, 'bstate'), secret: writeSecret(dir) });
  const socket = net.connect({ host: '127.0.0.1', port: backup.port });
  await new Promise((r) => socket.once('connect', r));
  const conn = new PeerConnection(socket);
  conn.sendParts(FrameType.Batch, encodeBatch([encodeEntry({ seq: 1, ts: 0, op: 'mkdir', path: '/x', mode: 0o755, uid: 0, gid: 0 })]));
  const answer = await conn.read(5000);
  conn.close();
  t.equal(answer && FrameType[answer.type], 'Error');
  t.match(String(unpackBody<{ message: string }>(answer!).message), /expected Hello, got Batch/);
  t.same(fs.readdirSync(dr), []);
});

t.test('a primary older than the epoch the backup knows is fenced: told why, nothing of its batch applied', async (t) => {
  const dir = tmpdir(t);
  const dr = path.join(dir, 'dr');
  const secretFile = writeSecret(dir);
  const secret = Buffer.from(fs.readFileSync(secretFile, 'utf8'));
  const backup = await startBackup(t, { target: dr, state: path.join(dir, 'bstate'), secret: secretFile });
  const mkdir = (seq: number, p: string): Entry => ({ seq, op: 'mkdir', path: p, mode: 0o755, uid: 0, gid: 0 });
  t.same((await sendBatch(backup.port, secret, 'epoch-3', [mkdir(1, '/new')], 3)).body, { appliedSeq: 1 }, 'a primary at epoch 3 is adopted');
  const stale = await sendBatch(backup.port, secret, 'epoch-2', [mkdir(1, '/stale')], 2);
  t.equal(stale.type, 'Fenced');
  t.match(stale.body, { epoch: 3, message: /this site is at epoch 3.*stale and fenced.*rejoin it as a backup/ });
  t.same(fs.readdirSync(dr), ['new'], 'nothing from the stale primary was applied');
  t.equal(JSON.parse(fs.readFileSync(path.join(dir, 'bstate', 'generation.json'), 'utf8')).epoch, 3, 'the epoch is kept durably');
});
