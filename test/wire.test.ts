import t from 'tap';
import { batchCopyBytes, COPY_BELOW, decodeBatch, encodeBatch, FrameReader, FrameType, frameHeader, MAX_FRAME, packBody, releaseFrame, unpackBody } from '../dist/wire/frame.js';
import { proof, proofMatches, readSecretFile } from '../dist/wire/auth.js';
import { crc32 } from '../dist/wire/checksum.js';
import { PeerConnection } from '../dist/wire/peer.js';
import { tryNativeAddon } from '../dist/fs/native.js';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';

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

t.test('chunks read whole and copied into a frame go back at once; a chunk a frame is a view of stays; a frame of its own is released', { skip: !tryNativeAddon() && 'the addon is not built' }, async (t) => {
  const big = Buffer.alloc(200_000, 9);
  const stream = Buffer.concat([frame(FrameType.Batch, big), frame(FrameType.Ack, packBody({ b: 2 }))]);
  // As a socket reads: each chunk a buffer of its own.
  const own = (c: Buffer) => {
    const b = Buffer.allocUnsafeSlow(c.length);
    c.copy(b);
    return b;
  };
  const chunks = [stream.subarray(0, 65536), stream.subarray(65536, 131072), stream.subarray(131072, 196608), stream.subarray(196608)].map(own);
  const lengths = chunks.map((c) => c.length);
  const reader = new FrameReader();
  const got = chunks.flatMap((c) => reader.push(c));
  t.same(got.map((f) => f.type), [FrameType.Batch, FrameType.Ack]);
  t.ok(got[0]!.body.equals(big), 'the large frame, whole');
  t.same(unpackBody(got[1]!), { b: 2 }, 'and the one after it, which came with its last chunk');
  t.same(chunks.map((c) => c.length), [0, 0, 0, lengths[3]], `the chunks copied into it whole were given back; the last, which holds the next frame too, stays (${lengths.join(', ')} bytes)`);
  t.equal(got[0]!.body.buffer.byteLength, big.length + 9, 'the large frame has a buffer of exactly its size');
  releaseFrame(got[1]!);
  t.same(unpackBody(got[1]!), { b: 2 }, 'a frame sharing its chunk is not released');
  releaseFrame(got[0]!);
  t.equal(got[0]!.body.length, 0, 'a frame with a buffer of its own is released');
  t.equal(chunks[3]!.length, lengths[3], 'and the chunk it shared with the next frame stays');

  const alone = own(frame(FrameType.Ack, packBody({ c: 3 })));
  const two = own(Buffer.concat([frame(FrameType.Ack, packBody({ d: 4 })), frame(FrameType.Ack, packBody({ e: 5 }))]));
  const [f] = new FrameReader().push(alone);
  t.equal(alone.length > 0, true, 'a frame read from one chunk is a view of it: the chunk stays');
  t.same(unpackBody(f!), { c: 3 });
  const [g, h] = new FrameReader().push(two);
  releaseFrame(g!);
  t.same([unpackBody(g!), unpackBody(h!)], [{ d: 4 }, { e: 5 }], 'two frames of one chunk: neither is released');
  releaseFrame(f!);
  t.equal(alone.length, 0, 'a frame that is its chunk whole is released with it');
});

t.test('a header split across chunks, and frames one byte at a time', async (t) => {
  const stream = Buffer.concat([frame(FrameType.Ack, packBody({ a: 1 })), frame(FrameType.Batch, Buffer.alloc(1000, 3)), frame(FrameType.Ack, packBody({ b: 2 }))]);
  const reader = new FrameReader();
  const got = [];
  for (let i = 0; i < stream.length; i++) got.push(...reader.push(Buffer.from(stream.subarray(i, i + 1))));
  t.same(got.map((f) => f.type), [FrameType.Ack, FrameType.Batch, FrameType.Ack]);
  t.same(unpackBody(got[2]!), { b: 2 });
  t.ok(got[1]!.body.equals(Buffer.alloc(1000, 3)));
});

t.test('a flipped byte anywhere in a frame is detected', async (t) => {
  const good = frame(FrameType.Batch, Buffer.concat(encodeBatch([Buffer.from('entry-one'), Buffer.from('entry-two')])));
  for (let i = 4; i < good.length; i++) {
    const bad = Buffer.from(good);
    bad[i] ^= 0x10;
    t.throws(() => new FrameReader().push(bad), { name: 'ProtocolError' }, `byte ${i}`);
  }
});

t.test("frames are sealed with the addon's CRC-32, which is zlib's, whole or in pieces", async (t) => {
  const addon = tryNativeAddon();
  t.ok(addon, 'the addon is built');
  t.equal(crc32, addon!.crc32, 'the addon computes it');
  for (const n of [0, 1, 7, 63, 256, 4097, 2 ** 20 + 3]) {
    const data = randomBytes(n);
    t.equal(crc32(data), zlib.crc32(data), `${n} bytes`);
    const cut = n >> 1;
    t.equal(crc32(data.subarray(cut), crc32(data.subarray(0, cut))), zlib.crc32(data), `${n} bytes in two pieces`);
    // Node's zlib.crc32 answers 0 for no bytes at all, whatever the running value: the value is the right answer.
    t.equal(crc32(data, 0xdeadbeef), n ? zlib.crc32(data, 0xdeadbeef) : 0xdeadbeef, `${n} bytes from a running value`);
  }
  t.throws(() => addon!.crc32('text' as unknown as Uint8Array), /Uint8Array/);
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

t.test('a batch copies its small entries and lengths into one buffer, given or its own; large entries go as views', async (t) => {
  const small = Array.from({ length: 100 }, (_, i) => Buffer.alloc(4096, i));
  const large = Buffer.alloc(COPY_BELOW, 9);
  const entries = [...small.slice(0, 50), large, ...small.slice(50)];
  const into = Buffer.alloc(batchCopyBytes(entries));
  const parts = encodeBatch(entries, into);
  t.equal(parts.length, 3, 'the small ones before the large entry, the large one, the small ones after');
  t.ok(parts[0]!.buffer === into.buffer && parts[2]!.buffer === into.buffer, 'the copies are in the buffer given');
  t.ok(parts[1]!.buffer === large.buffer && parts[1]!.byteOffset === large.byteOffset, 'the large entry is its own memory, not copied');
  t.same(decodeBatch(Buffer.concat(parts)), entries, 'and decodes as the entries, in order');
  const tooSmall = Buffer.alloc(64);
  const own = encodeBatch(small, tooSmall);
  t.equal(own.length, 1, 'small entries alone: one part');
  t.not(own[0]!.buffer, tooSmall.buffer, 'in a buffer of its own when the one given is too small');
  t.same(decodeBatch(own[0]!), small);
});

t.test('a frame sent in parts reports when the socket no longer holds them: only once the peer has taken them', async (t) => {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  const receiver = await accepted;
  receiver.pause(); // takes nothing: 32 MiB cannot all sit in the kernel's buffers
  const conn = new PeerConnection(socket);
  t.teardown(() => {
    conn.close();
    receiver.destroy();
  });
  const body = randomBytes(32 * 2 ** 20);
  let written = false;
  conn.sendParts(FrameType.Batch, [body.subarray(0, 2 ** 20), body.subarray(2 ** 20)], () => (written = true));
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.notOk(written, 'not while the peer takes nothing');
  const reader = new FrameReader();
  const got: Buffer[] = [];
  receiver.on('data', (chunk: Buffer) => got.push(...reader.push(chunk).map((f) => f.body)));
  receiver.resume();
  while (!written) await new Promise((resolve) => setTimeout(resolve, 10));
  while (got.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
  t.ok(got[0]!.equals(body), 'then reported, and the frame arrived whole');
  let closed = false;
  conn.close();
  conn.sendParts(FrameType.Batch, [body], () => (closed = true));
  t.ok(closed, 'on a closed connection at once: nothing was queued');
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
