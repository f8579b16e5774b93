// The backup gives a large batch's memory back once it is applied and acknowledged, but not while a transaction's
// staged writes are views of it: they are written at the commit, batches later.
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { FrameType, unpackBody } from '../dist/wire/frame.js';
import { connectAsPrimary, sendEntries, type Entry } from './helpers/batch.js';
import { layout, startBackup } from './helpers/cluster.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

t.test('large batches applied one after another; a transaction\'s staged writes survive the batches after them', async (t) => {
  const { dr, bstate, secret } = layout(t);
  const backup = await startBackup(t, { target: dr, state: bstate, secret });
  const { conn, reply } = await connectAsPrimary(backup.port, Buffer.from(fs.readFileSync(secret, 'utf8')), 'frames');
  t.teardown(() => conn.close());
  t.equal(reply.type, FrameType.Welcome);
  let seq = 0;
  const batch = async (entries: Entry[]) => {
    sendEntries(conn, entries.map((e) => ({ ...e, seq: ++seq })));
    const answer = await conn.read(10_000);
    t.equal(answer?.type, FrameType.Ack, `batch up to seq ${seq} acknowledged`);
    return unpackBody<{ appliedSeq: number }>(answer!);
  };

  // 3 MiB batches, each read from the socket in many chunks: a buffer of their own, given back once applied.
  const staged = randomBytes(3 << 20);
  await batch([
    { op: 'create', path: '/ledger.tbl', mode: 0o644, uid: 0, gid: 0 },
    { op: 'write', path: '/ledger.tbl', offset: 0, data: staged, txn: 'T1' },
  ]);
  const plain: Buffer[] = [];
  await batch([{ op: 'create', path: '/big.dat', mode: 0o644, uid: 0, gid: 0 }]);
  for (let i = 0; i < 6; i++) {
    const data = randomBytes(3 << 20);
    plain.push(data);
    await batch([{ op: 'write', path: '/big.dat', offset: i * data.length, data }]);
  }
  t.equal(fs.statSync(path.join(dr, 'ledger.tbl')).size, 0, 'the transaction\'s write waits for its commit');
  const done = await batch([{ op: 'txn-commit', txn: 'T1', paths: ['/ledger.tbl'] }]);
  t.equal(done.appliedSeq, seq);
  t.equal(sha(fs.readFileSync(path.join(dr, 'ledger.tbl'))), sha(staged), 'the committed write has every byte it was sent with');
  t.equal(sha(fs.readFileSync(path.join(dr, 'big.dat'))), sha(Buffer.concat(plain)), 'and the plain writes too');
});
