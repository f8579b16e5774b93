// The journal's acknowledgement path: the backup's applied seq releases waiters at once; the entries it covers leave
// lmdb with the next batch ('trimmed' then), and the seq survives a restart. Capture logs from before their salt.
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { encodeFrame, FrameKind, readCaptureLogs, readLog } from '../dist/journal/capture-log.js';
import { decodeEntry, encodeEntry, summarize, summarizeEncoded, type JournalEntry } from '../dist/journal/entry.js';
import { open, type Database, type RootDatabase } from 'lmdb';
import { HELD_BYTES, Journal, memoryLimit, readJournal } from '../dist/journal/journal.js';
import { tryNativeAddon } from '../dist/fs/native.js';
import { tmpdir } from './helpers/cluster.js';

t.test('an acknowledgement releases waiters, then trims what it covers; both survive a restart', async (t) => {
  const dir = tmpdir(t);
  let j = Journal.open(dir);
  for (let i = 0; i < 5; i++) j.append({ op: 'fsync', path: `/f${i}` });
  t.equal(j.lastSeq, 5);
  const waited = j.waitAcked(3, 5000);
  let trimmedFirst: number | undefined;
  j.once('trimmed', () => (trimmedFirst = j.firstSeq()));
  j.setAcked(3);
  await waited;
  t.equal(j.ackedSeq, 3, 'the waiter for seq 3 went on');
  t.equal(j.firstSeq(), 4, 'entries 1-3 left the journal');
  t.equal(trimmedFirst, 4, "'trimmed' came once they had: the backlog measured then is the new one");
  await t.rejects(j.waitAcked(4, 50), /not acknowledged within 50 ms/, 'a waiter for a later seq still waits');
  await j.close();

  j = Journal.open(dir);
  t.equal(j.ackedSeq, 3, 'the acknowledged seq after a restart');
  t.same([...j.entriesFrom(0)].map((e) => e.seq), [4, 5], 'and only what the backup still needs');
  await j.close();
});

t.test('a capture log left by a version before the salt is read back (its frames sealed with the generation alone), then started again salted', async (t) => {
  const dir = tmpdir(t);
  const generation = 7;
  const entry = encodeEntry({ op: 'write', path: '/a', offset: 0, data: Buffer.from('OLD'), seq: 1, ts: Date.now() });
  fs.writeFileSync(path.join(dir, 'capture-0.log'), Buffer.concat([
    encodeFrame(FrameKind.Generation, generation, BigInt(generation)),
    encodeFrame(FrameKind.Captured, 1, BigInt(generation), entry),
  ]));
  const left = readCaptureLogs(dir);
  t.same(left.frames.map((f) => [f.kind, f.seq]), [[FrameKind.Generation, generation], [FrameKind.Captured, 1]], 'its frames are read');
  const j = Journal.open(dir);
  t.same([...j.entriesFrom(0)].map((e) => [e.seq, e.op]), [[1, 'write']], 'the journal takes the captured entry in');
  const log = readLog(fs.readFileSync(path.join(dir, 'capture-0.log')));
  t.equal(log.generation, generation + 1, 'the log starts over at the next generation');
  t.equal(log.frames[0]!.body.length, 8, 'with a salt');
  t.not(log.key, BigInt(generation + 1), 'which its frames are sealed with');
  await j.close();
});

t.test("the capture logs' flush file has a directory of its own, away from the logs' inode-table block, and replaces the one beside them", async (t) => {
  const dir = tmpdir(t);
  fs.writeFileSync(path.join(dir, 'capture.flush'), ''); // where versions before the flush dir kept it
  const j = Journal.open(dir);
  const flush = path.join(dir, 'flush', 'capture');
  const st = fs.statSync(flush);
  t.equal(st.size, 0, 'the flush file is empty');
  t.equal(st.mode & 0o777, 0o600, 'and private');
  t.equal(fs.statSync(path.join(dir, 'flush')).mode & 0o777, 0o700, 'in a private directory');
  t.notOk(fs.existsSync(path.join(dir, 'capture.flush')), 'the old one is gone');
  // On ext4 an inode-table block holds at most 32 inodes (128 bytes each, 4 KiB blocks). The directory's
  // neighbours are the logs, whose inodes change with every write (native/flush.c).
  const fsType = execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim();
  if (fsType === 'ext2/ext3') {
    const block = (ino: number) => Math.floor((ino - 1) / 32);
    for (const log of ['capture-0.log', 'capture-1.log']) t.not(block(st.ino), block(fs.statSync(path.join(dir, log)).ino), `not in ${log}'s inode-table block`);
    t.notMatch(execFileSync('lsattr', ['-d', dir], { encoding: 'utf8' }).split(' ')[0]!, /T/, 'the state dir does not keep the top-directory flag');
  }
  await j.close();
  const again = Journal.open(dir);
  t.equal(fs.statSync(flush).ino, st.ino, 'a restart keeps the flush file');
  await again.close();
});

t.test("an entry's summary for the activity counters is read from its first headers, and agrees with the decoded entry", async (t) => {
  const at = { seq: 7, ts: 1 };
  const entries: JournalEntry[] = [
    { op: 'write', path: '/a', offset: 0, data: new Uint8Array(3), ...at },
    { op: 'write', path: '/' + 'p'.repeat(40), offset: 200, data: new Uint8Array(300), ...at }, // str8, uint8, bin16
    { op: 'write', path: '/' + 'q'.repeat(300), offset: 70_000, data: new Uint8Array(70_000), ...at }, // str16, uint32, bin32
    { op: 'write', path: '/ø/é', offset: 2 ** 40, data: new Uint8Array(0), ...at }, // UTF-8, an offset past 32 bits
    { op: 'write', path: '/b', offset: 1, data: new Uint8Array(1), txn: 'x', ...at },
    { op: 'fsync', path: '/c', ...at, stamps: [['/c', [1, 2], [3, 4]]] },
    { op: 'rename', path: '/d', to: '/e', ...at },
    { op: 'txn-commit', txn: 'x', paths: ['/b'], ...at }, // no path: decoded
    { op: 'baseline-start', ...at },
  ];
  for (const e of entries) {
    const bytes = encodeEntry(e);
    t.same(summarizeEncoded(bytes), summarize(decodeEntry(bytes)), `${e.op} ${'path' in e ? e.path.slice(0, 12) : ''}`);
  }
  t.same(summarizeEncoded(encodeEntry(entries[1]!)), { op: 'write', path: '/' + 'p'.repeat(40), bytes: 300 }, 'a write counts its data bytes');
  // Keys in another order (not the native layout) are decoded.
  const reordered = encodeEntry({ path: '/f', op: 'write', data: new Uint8Array(5), offset: 0, ...at } as JournalEntry);
  t.same(summarizeEncoded(reordered), { op: 'write', path: '/f', bytes: 5 });
  t.throws(() => summarizeEncoded(encodeEntry(entries[2]!).subarray(0, 40)), 'a cut-off entry is an error, as decoding it is');
});

t.test('acknowledged entries leave lmdb a database at a time: the file stays bounded, reads span both, and a restart keeps the split', async (t) => {
  const dir = tmpdir(t);
  const MiB = 2 ** 20;
  const write = (j: Journal, n: number) => j.append({ op: 'write', path: '/big', offset: 0, data: Buffer.alloc(MiB, n % 251) });
  const dataFile = path.join(dir, 'journal', 'data.mdb');
  let j = Journal.open(dir);
  for (let round = 0; round < 8; round++) {
    for (let i = 0; i < 20; i++) write(j, i);
    t.ok(j.backlogBytes() >= 20 * MiB && j.backlogBytes() < 21 * MiB, `round ${round}: the backlog counts what is not acknowledged (${j.backlogBytes()})`);
    j.setAcked(j.lastSeq);
    t.ok(j.backlogBytes() < 64 * 1024, `and drops once it is (${j.backlogBytes()})`);
  }
  t.equal(j.firstSeq(), 161, 'nothing acknowledged is read back');
  t.ok(fs.statSync(dataFile).size < 120 * MiB, `160 MiB through the journal, its file ${fs.statSync(dataFile).size >> 20} MiB: what was acknowledged was freed`);

  // 161-200, and past 170 acknowledged: the next entries go to the other database, 171-200 stay where they are.
  for (let i = 0; i < 40; i++) write(j, i);
  j.setAcked(170);
  const needed = (to: number) => Array.from({ length: to - 170 }, (_, i) => 171 + i);
  t.same([...j.entriesFrom(0)].map((e) => e.seq), needed(200), 'what the backup still needs, in order');
  write(j, 201);
  t.same(j.read(171, Infinity, 100).map((e) => e.seq), needed(201), 'the shipper reads it from both databases');
  await j.close();

  j = Journal.open(dir);
  t.equal(j.lastSeq, 201);
  t.equal(j.firstSeq(), 171, 'after a restart the same entries are held');
  t.ok(j.backlogBytes() >= 31 * MiB && j.backlogBytes() < 32 * MiB, `and measured as the backlog (${j.backlogBytes()})`);
  write(j, 202);
  t.same([...j.entriesFrom(0)].map((e) => e.seq), needed(202), 'a new entry follows them');
  await j.close();
});

t.test('with capture logs, entries wait in memory for the backup: a flush syncs the capture logs they are in; a swap stores those whose frames it overwrites, a backlog or a new session all', async (t) => {
  const dir = tmpdir(t);
  const j = Journal.open(dir);
  const synced: number[] = [];
  const fdatasync = fs.fdatasync;
  fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
    synced.push(fd);
    fdatasync(fd, cb);
  }) as typeof fs.fdatasync;
  t.teardown(() => void (fs.fdatasync = fdatasync));
  const flushedLogs = async () => {
    synced.length = 0;
    await j.flushed();
    return j.captureLogs!.logFds.map((fd) => synced.includes(fd));
  };
  // The native binding's side, as the journal sees it: seqs, and the frames it "captured".
  const { key } = j.captureLogs!;
  let next = j.lastSeq + 1;
  let captured: Buffer[] = [];
  let logBytes = 0;
  let swaps = 0;
  const capture = (n: number, size = 4) => {
    for (let i = 0; i < n; i++, next++) {
      captured.push(encodeFrame(FrameKind.Captured, next, key, encodeEntry({ op: 'write', path: '/f', offset: 0, data: Buffer.alloc(size, next), seq: next, ts: Date.now() })));
    }
    j.commitNow();
  };
  const session = {
    reserve: () => next++,
    unreserve: () => false,
    logFrame: () => undefined,
    // As the binding hands them over: whole frames in several buffers (here up to three a buffer).
    take: () => {
      const parts: Buffer[] = [];
      for (let i = 0; i < captured.length; i += 3) parts.push(Buffer.concat(captured.slice(i, i + 3)));
      captured = [];
      return parts.length ? parts : undefined;
    },
    rotate: async () => void ((logBytes = 0), swaps++),
    checkpoint: async () => undefined,
    wantsCheckpoint: () => false,
    logBytes: () => logBytes,
    giveBack: () => undefined,
  };
  j.attach(session);

  const lastTxn = () => ((j as unknown as { env: RootDatabase }).env.getStats() as { lastTxnId: number }).lastTxnId;
  const txnBefore = lastTxn();
  capture(3);
  t.same(j.read(1, Infinity, 100).map((e) => e.seq), [1, 2, 3], 'the shipper reads them');
  t.equal(lastTxn(), txnBefore, 'held, they were taken in without an lmdb transaction');
  t.same(await flushedLogs(), [true, false], 'a flush syncs the active capture log, where their frames are');
  j.setAcked(3);
  j.commitNow();
  t.equal(lastTxn(), txnBefore, 'nor is their acknowledgement, lmdb never having held them');
  t.same(await flushedLogs(), [false, false], 'acknowledged, none waits: lmdb alone is flushed');
  await new Promise((r) => setTimeout(r, 1100));
  t.ok(lastTxn() > txnBefore, 'the flush tick records it');

  const swap = async () => {
    const before = swaps;
    logBytes = 2 ** 27; // the next flush tick swaps the logs
    for (let i = 0; i < 50 && swaps === before; i++) await new Promise((r) => setTimeout(r, 100));
    t.equal(swaps, before + 1, `swap ${before + 1}`);
    await new Promise((r) => setTimeout(r, 50)); // the journal's side of it
  };
  capture(2); // 4, 5
  await swap();
  t.same(await flushedLogs(), [true, true], 'entries taken in before a swap wait on, their frames in the log it left');
  j.setAcked(4);
  j.commitNow();
  capture(1); // 6, in log 1
  await swap();
  t.same(await flushedLogs(), [true, true], 'the next swap stored 5 (log 0 was overwritten), not 6 (in log 1, kept)');
  j.attach(session); // a mount again: its session starts the logs over, at log 0
  t.same(await flushedLogs(), [false, false], 'a new session stores what waited');
  capture(1); // 7
  t.same(await flushedLogs(), [true, false], 'and its entries wait in log 0');
  const past = Math.floor(HELD_BYTES / 2 ** 20) + 1;
  capture(past, 2 ** 20); // 8 on: past HELD_BYTES of backlog
  t.same(await flushedLogs(), [false, false], 'a backlog is stored at once');
  const backlog = j.backlogBytes();
  await j.close();
  const reopened = Journal.open(dir);
  t.ok(Math.abs(reopened.backlogBytes() - backlog) < 64 * 1024, `a start counts the same backlog from what the last transaction recorded (${backlog} B, then ${reopened.backlogBytes()} B)`);
  t.equal(reopened.ackedSeq, 4, 'and the acknowledged seq the close recorded');
  await reopened.close();

  const env = open({ path: path.join(dir, 'journal'), maxDbs: 8 });
  const keys = ['entries', 'entries-1'].flatMap((name) => [...(env.openDB<Buffer, number>({ name, encoding: 'binary' })?.getKeys() ?? [])]);
  t.same(keys.sort((a, b) => a - b), Array.from({ length: past + 3 }, (_, i) => 5 + i), `lmdb has 5-${past + 7}: never 1-4, acknowledged while they waited`);
  await env.close();
});

t.test('a hand-over buffer of one large entry goes back to the binding once the backup acknowledged it; others are left to the garbage collector', async (t) => {
  const j = Journal.open(tmpdir(t));
  const { key } = j.captureLogs!;
  let next = j.lastSeq + 1;
  let parts: Buffer[] = [];
  const given: number[] = [];
  const seqOf = new Map<Buffer, number>();
  const frame = (size: number) => {
    const seq = next++;
    return encodeFrame(FrameKind.Captured, seq, key, encodeEntry({ op: 'write', path: '/f', offset: 0, data: Buffer.alloc(size, seq), seq, ts: Date.now() }));
  };
  /** One buffer of `count` frames of `size` bytes, as take() hands it over. */
  const handOver = (count: number, size: number) => {
    const first = next;
    const part = Buffer.concat(Array.from({ length: count }, () => frame(size)));
    seqOf.set(part, first);
    parts.push(part);
  };
  j.attach({
    reserve: () => next++,
    unreserve: () => false,
    logFrame: () => undefined,
    take: () => (parts.length ? parts.splice(0) : undefined),
    giveBack: (part) => void given.push(seqOf.get(part)!),
    rotate: async () => undefined,
    checkpoint: async () => undefined,
    wantsCheckpoint: () => false,
    logBytes: () => 0,
  });
  handOver(1, 2 ** 20); // 1: one large entry
  handOver(3, 2 ** 20); // 2-4: three in one buffer
  handOver(1, 4096); // 5: one small entry
  handOver(1, 2 ** 20); // 6
  j.commitNow();
  t.same(j.read(1, Infinity, 100).map((e) => e.bytes.length > 2 ** 20), [true, true, true, true, false, true], 'the shipper reads every entry');
  t.same(given, [], 'nothing is given back before the backup acknowledges it');
  j.setAcked(5);
  j.commitNow();
  t.same(given, [1], 'acknowledged: the buffer of the one large entry goes back; a buffer of three and a small one do not');
  t.equal(j.read(6, Infinity, 100)[0]!.bytes.length > 2 ** 20, true, 'the entry after them is still whole');

  // A backlog past HELD_BYTES: lmdb stores it, and the shipper's recent entries let go of the older ones (32 MiB).
  given.length = 0;
  const from = next;
  const past = Math.floor(HELD_BYTES / 2 ** 20) + 1;
  for (let i = 0; i < past; i++) handOver(1, 2 ** 20);
  j.commitNow();
  j.setAcked(next - 1);
  j.commitNow();
  t.ok(given.length > 0 && given.length <= 33, `only the ones still in memory are given back (${given.length} of ${past + 1})`);
  t.ok(given.every((seq) => seq >= from + past - 40), 'never one lmdb holds and memory let go of, which a shipper may still be reading');
  await j.close();
});

t.test('giveBack detaches a buffer: its memory goes back at once, and it reads as empty', { skip: !tryNativeAddon() && 'the addon is not built' }, async (t) => {
  const buf = Buffer.alloc(2 ** 20, 1);
  const view = buf.subarray(10, 20);
  tryNativeAddon()!.giveBack(buf);
  t.equal(buf.length, 0);
  t.equal(view.length, 0, 'and so does every view of it');
});

t.test('a backlog leaves lmdb as soon as the backup has acknowledged it: the pages it held take the next entries', async (t) => {
  const dir = tmpdir(t);
  const MiB = 2 ** 20;
  const j = Journal.open(dir);
  const write = () => j.append({ op: 'write', path: '/big', offset: 0, data: Buffer.alloc(MiB, 1) });
  for (let i = 0; i < 60; i++) write(); // the backup away
  j.setAcked(j.lastSeq); // and back: all of it applied
  const grown = fs.statSync(path.join(dir, 'journal', 'data.mdb')).size;
  for (let i = 0; i < 40; i++) {
    write();
    j.setAcked(j.lastSeq);
  }
  const size = fs.statSync(path.join(dir, 'journal', 'data.mdb')).size;
  t.ok(size < grown + 8 * MiB, `40 MiB more, acknowledged as they came, in the backlog's pages: ${grown >> 20} MiB, then ${size >> 20} MiB`);
  await j.close();
});

t.test('a journal from before its entries were split in two databases is read as it was', async (t) => {
  const dir = tmpdir(t);
  const env = open({ path: path.join(dir, 'journal'), maxDbs: 8 });
  const entries = env.openDB<Buffer, number>({ name: 'entries', encoding: 'binary' });
  const meta = env.openDB<unknown, string>({ name: 'meta' });
  await meta.put('journalId', 'j-old');
  await meta.put('ackedSeq', 1);
  const ts = Date.now();
  for (let seq = 2; seq <= 4; seq++) await entries.put(seq, encodeEntry({ op: 'fsync', path: `/f${seq}`, seq, ts: ts + seq }));
  await env.close();
  t.same(readJournal(dir), { journalId: 'j-old', lastSeq: 4, ackedSeq: 1, baselineDone: false, oldestUnackedTs: ts + 2 }, 'drms status reads it without its node');
  const j = Journal.open(dir);
  t.equal(j.lastSeq, 4);
  t.same([...j.entriesFrom(0)].map((e) => e.seq), [2, 3, 4], 'its entries after the acknowledged seq');
  t.equal(j.append({ op: 'fsync', path: '/f5' }), 5, 'and it goes on from there');
  t.same(j.read(2, Infinity, 10).map((e) => e.seq), [2, 3, 4, 5]);
  await j.close();
});

t.test("a start takes the backlog from the counts meta keeps with the entries, not from reading them; entries stored without the counts are measured", async (t) => {
  const dir = tmpdir(t);
  const KiB = 1024;
  const lmdbEntries = async (use: (entries: Database<Buffer, number>) => unknown) => {
    const env = open({ path: path.join(dir, 'journal'), maxDbs: 8 });
    await use(env.openDB<Buffer, number>({ name: 'entries', encoding: 'binary' }));
    await env.close();
  };
  const unacknowledgedBytes = async () => {
    let bytes = 0;
    await lmdbEntries((entries) => {
      for (const { value } of entries.getRange({ start: 101 })) bytes += value.length;
    });
    return bytes;
  };
  const entryOf = (seq: number, size: number) => encodeEntry({ op: 'write', path: '/log', offset: 0, data: Buffer.alloc(size, seq), seq, ts: Date.now(), done: true });

  let j = Journal.open(dir);
  for (let i = 0; i < 300; i++) j.append({ op: 'write', path: '/log', offset: 0, data: Buffer.alloc(KiB, i) });
  j.setAcked(100);
  const counted = j.backlogBytes();
  const exact = await unacknowledgedBytes();
  t.ok(counted >= exact && counted < exact + 64 * KiB, `the backlog as counted (${counted} B, ${exact} B exact)`);
  await j.close();

  // An entry grown behind the journal's back, at a seq below the highest: a start that read the entries would see it.
  await lmdbEntries((entries) => entries.put(150, entryOf(150, 100 * KiB)));
  j = Journal.open(dir);
  t.equal(j.backlogBytes(), counted, 'a restart reads the counts: the same backlog');
  await j.close();

  // Another writer (a version before the counts) stored past the highest seq they record: measured from the entries.
  await lmdbEntries((entries) => entries.put(301, entryOf(301, KiB)));
  const measured = await unacknowledgedBytes();
  j = Journal.open(dir);
  t.equal(j.backlogBytes(), measured, `counts another writer left behind are measured again (${measured} B)`);
  t.equal(j.lastSeq, 301);
  await j.close();

  // A capture log whose frames lmdb partly holds: recovery counts what it adds, once.
  let held!: Buffer;
  await lmdbEntries((entries) => void (held = Buffer.from(entries.get(301)!)));
  const generation = 1000n;
  fs.writeFileSync(path.join(dir, 'capture-0.log'), Buffer.concat([
    encodeFrame(FrameKind.Generation, 1000, generation),
    encodeFrame(FrameKind.Captured, 301, generation, held),
    encodeFrame(FrameKind.Captured, 302, generation, entryOf(302, 2 * KiB)),
    encodeFrame(FrameKind.Captured, 303, generation, entryOf(303, 3 * KiB)),
  ]));
  const recovered = measured + entryOf(302, 2 * KiB).length + entryOf(303, 3 * KiB).length;
  j = Journal.open(dir);
  t.equal(j.lastSeq, 303, 'the captured entries are taken in');
  t.equal(j.backlogBytes(), recovered, 'and counted once each');
  await j.close();
  t.equal(await unacknowledgedBytes(), recovered, 'as lmdb holds them');
  j = Journal.open(dir);
  t.equal(j.backlogBytes(), recovered, 'the counts recovery recorded');
  await j.close();
});

// A memory cgroup of `bytes` (v1's memory controller or v2's), removed after the test; undefined where none can be made.
function memoryCgroup(t: Test, bytes: number): string | undefined {
  const name = `drms-test-${process.pid}`;
  const layouts = [
    { dir: path.join('/sys/fs/cgroup/memory', name), limit: 'memory.limit_in_bytes' },
    { dir: path.join('/sys/fs/cgroup', name), limit: 'memory.max' },
  ];
  for (const { dir, limit } of layouts) {
    if (!fs.existsSync(path.dirname(dir))) continue;
    try {
      fs.mkdirSync(dir);
    } catch {
      continue;
    }
    t.teardown(() => fs.rmdirSync(dir));
    try {
      fs.writeFileSync(path.join(dir, limit), String(bytes));
      return dir;
    } catch {
      continue; // v2 without the memory controller in the parent's subtree
    }
  }
  return undefined;
}

t.test('in a container, the backlog held in memory is a sixteenth of its memory limit, not of the machine', async (t) => {
  const limit = 2 ** 30;
  const cgroup = memoryCgroup(t, limit);
  if (!cgroup) return t.plan(0, 'no memory cgroup can be made here (not root, or no memory controller)');
  const probe = `import('${path.resolve('dist/journal/journal.js')}').then((m) => console.log(m.HELD_BYTES, m.memoryLimit()))`;
  const held = (inCgroup: boolean) => {
    const script = `${inCgroup ? `echo $$ > ${cgroup}/cgroup.procs && ` : ''}exec node -e "${probe}"`;
    return execFileSync('sh', ['-c', script], { encoding: 'utf8' }).trim().split(' ').map(Number);
  };
  t.same(held(true), [limit / 16, limit], '1 GiB container: 64 MiB held');
  t.same(held(false), [HELD_BYTES, memoryLimit()], 'outside it: the same as this process');
});
