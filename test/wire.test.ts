import t from 'tap';
import { decodeBatch, encodeBatch, FrameReader, FrameType, frameHeader, MAX_FRAME, packBody, unpackBody } from '../dist/wire/frame.js';
import { proof, proofMatches, readSecretFile } from '../dist/wire/auth.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const frame = (type: FrameType, body: Buffer) => Buffer.concat([frameHeader(type, [body]), body]);

t.test('frames survive arbitrary chunking', async (t) => {
  const bodies = [packBody({ a: 1 }), Buffer.alloc(0), Buffer.alloc(100_000, 7)];
  const stream = Buffer.concat(bodies.map((b) => frame(FrameType.Ack, b)));
  const reader = new FrameReader();
  const got = [];
  for (let i = 0; i < stream.length; i += 997) got.push(...reader.push(stream.subarray(i, i + 997)));
  t.equal(got.length, 3);
  t.same(got.map((f) => f.body.length), [bodies[0]!.length, 0, 100_000]);
  t.same(unpackBody(got[0]!), { a: 1 });
});

t.test('a flipped byte anywhere in a frame is detected', async (t) => {
  const good = frame(FrameType.Batch, Buffer.concat(encodeBatch([Buffer.from('entry-one'), Buffer.from('entry-two')])));
  for (let i = 4; i < good.length; i++) {
    const bad = Buffer.from(good);
    bad[i] ^= 0x10;
    t.throws(() => new FrameReader().push(bad), { name: 'ProtocolError' }, `byte ${i}`);
  }
});

t.test('an impossible length is refused before buffering', async (t) => {
  const head = Buffer.alloc(9);
  head.writeUInt32BE(MAX_FRAME + 1, 0);
  t.throws(() => new FrameReader().push(head), { name: 'ProtocolError', message: /out of range/ });
});

t.test('batches round-trip and reject overruns', async (t) => {
  const entries = [Buffer.from('a'), Buffer.alloc(0), Buffer.alloc(5000, 3)];
  const body = Buffer.concat(encodeBatch(entries));
  t.same(decodeBatch(body).map((b) => b.length), [1, 0, 5000]);
  t.throws(() => decodeBatch(body.subarray(0, body.length - 1)), { name: 'ProtocolError' });
  t.throws(() => decodeBatch(Buffer.concat([body, Buffer.from([0])])), { name: 'ProtocolError', message: /trailing/ });
});

t.test('proofs bind the secret, the side and both nonces', async (t) => {
  const s = Buffer.from('0123456789abcdef0123');
  const a = Buffer.alloc(32, 1);
  const b = Buffer.alloc(32, 2);
  const p = proof(s, 'primary', a, b);
  t.ok(proofMatches(p, proof(s, 'primary', a, b)));
  t.notOk(proofMatches(p, proof(Buffer.from('another-secret-value'), 'primary', a, b)));
  t.notOk(proofMatches(p, proof(s, 'backup', a, b)), 'a backup proof cannot be replayed as a primary proof');
  t.notOk(proofMatches(p, proof(s, 'primary', b, a)));
  t.notOk(proofMatches(p, 'not a buffer'));
});

t.test('secret files readable by others are refused', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'drms-secret-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true }));
  const f = path.join(dir, 's');
  fs.writeFileSync(f, 'a-long-enough-secret', { mode: 0o644 });
  fs.chmodSync(f, 0o644);
  t.throws(() => readSecretFile(f), { name: 'ConfigError', message: /chmod 600/ });
  fs.chmodSync(f, 0o600);
  t.equal(readSecretFile(f).toString(), 'a-long-enough-secret');
  fs.writeFileSync(f, 'short');
  t.throws(() => readSecretFile(f), { message: /shorter than 16/ });
});
