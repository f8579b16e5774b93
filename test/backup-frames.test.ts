// The backup gives a large batch's memory back once it is applied and acknowledged, but not while a transaction's
// staged writes are views of it: they are written at the commit, batches later.
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { FrameType, unpackBody } from '../dist/wire/frame.js';
import { connectAsPrimary, sendEntries, type Entry } from './helpers/batch.js';
import { drms, layout, startBackup } from './helpers/cluster.js';

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

t.test('appends to one file applied as one write: the file has each in order, and each entry is applied and counted on its own', async (t) => {
  const { dr, bstate, secret } = layout(t);
  const backup = await startBackup(t, { target: dr, state: bstate, secret });
  fs.mkdirSync(path.join(dr, 'spool'));
  const { conn, reply } = await connectAsPrimary(backup.port, Buffer.from(fs.readFileSync(secret, 'utf8')), 'runs');
  t.teardown(() => conn.close());
  t.equal(reply.type, FrameType.Welcome);
  const records = Array.from({ length: 2000 }, (_, i) => Buffer.from(`txn ${i}\n`));
  const ends = new Map<string, number>();
  let seq = 0;
  const appends = (p: string, data: Buffer[]): Entry[] => data.map((d) => {
    const offset = ends.get(p) ?? 0;
    ends.set(p, offset + d.length);
    return { op: 'write', path: p, offset, data: d, seq: ++seq };
  });
  const entries: Entry[] = [
    { op: 'create', path: '/atm.log', mode: 0o644, uid: 0, gid: 0, seq: ++seq },
    ...appends('/atm.log', records.slice(0, 1500)), // more than one run (1024 entries at most)
    ...appends('/never-made.log', [Buffer.from('x')]), // fails alone
    ...appends('/atm.log', records.slice(1500, 1900)),
    ...appends('/spool', records.slice(0, 3)), // a directory: the run cannot be written, and each entry fails alone
    ...appends('/atm.log', records.slice(1900)),
  ];
  sendEntries(conn, entries);
  const answer = await conn.read(10_000);
  t.equal(answer?.type, FrameType.Ack);
  t.equal(unpackBody<{ appliedSeq: number }>(answer!).appliedSeq, seq, 'the whole batch applied');
  t.equal(fs.readFileSync(path.join(dr, 'atm.log'), 'utf8'), records.join(''), 'every record once, in order');
  const failed = backup.logs.filter((l) => l.msg === 'apply: operation failed; the trees differ until repaired').map((l) => l.seq);
  t.same(failed, [1502, 1903, 1904, 1905], 'each entry that could not be applied is reported on its own, by its seq');
  const report = JSON.parse((await drms(['report', '--state', bstate, '--since', '1h', '--files', '--format', 'json'])).stdout) as {
    system: { byKind: Record<string, number> };
    files: Array<{ path: string; ops: number; bytes: number }>;
  };
  t.equal(report.system.byKind.write, 2004, 'every write counted, those that failed too');
  t.match(report.files.find((f) => f.path === '/atm.log'), { ops: 2001, bytes: Buffer.concat(records).length }, 'the file: its create and each of its writes, with their bytes');
});
