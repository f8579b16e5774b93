// The backup's applied state: its own small file of two checksummed slots (one flush a checkpoint), read back after
// a restart, the other slot when the newest is torn, and taken over from lmdb where an older version kept it; the
// redo log beside it, which acknowledges batches of plain writes without flushing their files.
import t from 'tap';
import { open } from 'lmdb';
import fs from 'node:fs';
import path from 'node:path';
import { BackupState } from '../dist/apply/state.js';
import { encodeEntry } from '../dist/journal/entry.js';
import { tmpdir } from './helpers/cluster.js';

const ID = '6f1c0b6e-3d0e-4a53-9d1e-2b8f0e6c4a11';

t.test('the applied state survives a restart; a torn newest slot falls back to the one before', async (t) => {
  const dir = tmpdir(t);
  let s = BackupState.open(dir);
  t.same(s.get(), { journalId: undefined, appliedSeq: 0, resyncing: false }, 'a new state directory');
  await s.save({ journalId: ID, appliedSeq: 5, resyncing: false });
  await s.save({ journalId: ID, appliedSeq: 9, resyncing: true });
  await s.close();

  s = BackupState.open(dir);
  t.same(s.get(), { journalId: ID, appliedSeq: 9, resyncing: true }, 'the last save, after a restart');
  await s.close();

  // The second save went to slot 0 (counter 2): tear it as a power cut in the middle of the write would.
  const file = path.join(dir, 'backup', 'applied');
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.from('torn'), 0, 4, 20);
  fs.closeSync(fd);
  s = BackupState.open(dir);
  t.same(s.get(), { journalId: ID, appliedSeq: 5, resyncing: false }, 'the save before it: the primary sends the rest again');
  await s.save({ journalId: ID, appliedSeq: 12, resyncing: false });
  await s.close();
  s = BackupState.open(dir);
  t.equal(s.get().appliedSeq, 12, 'and saving goes on over the torn slot');
  await s.close();
});

t.test('an applied record with holes (as older versions left it) is written in full once, and keeps its state', async (t) => {
  const dir = tmpdir(t);
  let s = BackupState.open(dir);
  await s.save({ journalId: ID, appliedSeq: 7, resyncing: false });
  await s.close();
  // As older versions made it: the file sized by ftruncate, only the slot saved so far written (slot 1: counter 1).
  const file = path.join(dir, 'backup', 'applied');
  const slot1 = fs.readFileSync(file).subarray(4096, 8192);
  fs.rmSync(file);
  const fd = fs.openSync(file, 'w', 0o600);
  fs.ftruncateSync(fd, 8192);
  fs.writeSync(fd, slot1, 0, 4096, 4096);
  fs.closeSync(fd);
  t.ok(fs.statSync(file).blocks * 512 < 8192, 'slot 0 is a hole');
  s = BackupState.open(dir);
  t.ok(fs.statSync(file).blocks * 512 >= 8192, 'both slots have blocks: a save is an overwrite, with no allocation to flush');
  t.same(s.get(), { journalId: ID, appliedSeq: 7, resyncing: false }, 'the state it held');
  await s.save({ journalId: ID, appliedSeq: 8, resyncing: false });
  await s.close();
  s = BackupState.open(dir);
  t.equal(s.get().appliedSeq, 8, 'saving goes on');
  await s.close();
});

t.test('a state directory of an older version (applied seq in lmdb) is taken over', async (t) => {
  const dir = tmpdir(t);
  const old = open({ path: path.join(dir, 'backup') });
  await old.put('journalId', ID);
  await old.put('appliedSeq', 42);
  await old.put('resyncing', false);
  await old.close();
  let s = BackupState.open(dir);
  t.same(s.get(), { journalId: ID, appliedSeq: 42, resyncing: false });
  await s.save({ journalId: ID, appliedSeq: 43, resyncing: false });
  await s.close();
  s = BackupState.open(dir);
  t.equal(s.get().appliedSeq, 43, 'then its own file');
  await s.close();
});

t.test('the applied mark: ahead of the record in this boot, a restart takes it; from another boot, or past staged writes, not', async (t) => {
  const dir = tmpdir(t);
  let s = BackupState.open(dir);
  await s.save({ journalId: ID, appliedSeq: 5, resyncing: false });
  for (const seq of [6, 7, 8]) s.applied({ journalId: ID, appliedSeq: seq, resyncing: false });
  await s.close();
  s = BackupState.open(dir);
  t.equal(s.get().appliedSeq, 5, 'durable: the record');
  t.same(s.markedAhead(), { journalId: ID, appliedSeq: 8, resyncing: false }, 'applied to the files, this boot: the mark');
  await s.save({ journalId: ID, appliedSeq: 8, resyncing: false });
  t.equal(s.markedAhead(), undefined, 'once recorded, nothing ahead');
  s.applied({ journalId: ID, appliedSeq: 9, resyncing: true });
  await s.close();

  const mark = path.join(dir, 'backup', 'applied-mark');
  const bytes = fs.readFileSync(mark);
  bytes.write('00000000-0000-0000-0000-000000000000', 0);
  fs.writeFileSync(mark, bytes);
  s = BackupState.open(dir);
  t.equal(s.markedAhead(), undefined, 'written in another boot: the files may have kept any part of it');
  s.applied({ journalId: ID, appliedSeq: 9, resyncing: false });
  s.staging().stage('t1', { op: 'write', path: '/a', offset: 0, data: Buffer.from('staged'), seq: 10, ts: 1, txn: 't1' });
  s.applied({ journalId: ID, appliedSeq: 10, resyncing: false });
  await s.close();
  s = BackupState.open(dir);
  t.equal(s.markedAhead()?.appliedSeq, 9, 'not past a staged write lmdb may not hold: that one is sent again');
  await s.close();
});

t.test('staged transaction writes are durable with the applied seq that covers them', async (t) => {
  const dir = tmpdir(t);
  let s = BackupState.open(dir);
  const staged = s.staging();
  staged.stage('t1', { op: 'write', path: '/a', offset: 0, data: Buffer.from('staged'), seq: 7, ts: 1, txn: 't1' });
  await s.save({ journalId: ID, appliedSeq: 7, resyncing: false });
  await s.close();
  s = BackupState.open(dir);
  t.same(s.staging().entries('t1').map((e) => e.seq), [7], 'the staged write is back after a restart');
  t.equal(s.get().appliedSeq, 7);
  await s.close();
});

const OTHER = '0b7e9a52-5c1d-4f0e-8a3b-7d2c6e9f1a20';
const write = (seq: number, text: string) => encodeEntry({ op: 'write', path: '/ledger', offset: seq * 8, data: Buffer.from(text), seq, ts: 1 });
const seqs = (s: BackupState) => s.takeRedo().map((e) => e.seq);

t.test('the redo log: what it acknowledged comes back after a restart, until a checkpoint covers it', async (t) => {
  const dir = tmpdir(t);
  let s = BackupState.open(dir);
  t.notOk(s.logged({ journalId: ID, appliedSeq: 2, resyncing: false }, [write(1, 'a'), write(2, 'b')]), 'not before the applied record names the journal: the first batch is a checkpoint');
  await s.save({ journalId: ID, appliedSeq: 2, resyncing: false });
  t.ok(s.logged({ journalId: ID, appliedSeq: 4, resyncing: false }, [write(3, 'c'), write(4, 'd')]));
  t.ok(s.logged({ journalId: ID, appliedSeq: 5, resyncing: false }, [write(5, 'e')]));
  t.notOk(s.logged({ journalId: ID, appliedSeq: 6, resyncing: false }, [write(6, 'x'.repeat(70 * 1024))]), 'a large batch: flushing its file costs less');
  t.notOk(s.logged({ journalId: OTHER, appliedSeq: 1, resyncing: false }, [write(1, 'a')]), 'another journal: a checkpoint');
  t.equal(s.get().appliedSeq, 2, 'written to the log, not flushed: not yet counted');
  t.same(s.flushLogged(), { journalId: ID, appliedSeq: 5, resyncing: false }, 'one flush for the records written since');
  t.equal(s.get().appliedSeq, 5, 'what it holds counts as applied');
  t.equal(s.flushLogged(), undefined, 'nothing waits for a flush then');
  await s.close();

  s = BackupState.open(dir);
  t.same(s.get(), { journalId: ID, appliedSeq: 5, resyncing: false }, 'after a restart: the applied record and the redo log beyond it');
  t.same(seqs(s), [3, 4, 5], 'the entries to apply again, in order');
  t.same(seqs(s), [], 'once');
  await s.save({ journalId: ID, appliedSeq: 5, resyncing: false });
  t.ok(s.logged({ journalId: ID, appliedSeq: 6, resyncing: false }, [write(6, 'f')]), 'the log starts over after a checkpoint');
  await s.close();

  s = BackupState.open(dir);
  t.same(seqs(s), [6], 'the records the checkpoint covered, still behind the new one in the file, are not applied again');
  t.equal(s.get().appliedSeq, 6);
  await s.close();
});

t.test('the redo log ends at a torn record', async (t) => {
  const dir = tmpdir(t);
  let s = BackupState.open(dir);
  await s.save({ journalId: ID, appliedSeq: 0, resyncing: false });
  t.ok(s.logged({ journalId: ID, appliedSeq: 1, resyncing: false }, [write(1, 'a')]));
  t.ok(s.logged({ journalId: ID, appliedSeq: 2, resyncing: false }, [write(2, 'b')]));
  await s.close();
  // The second record's last byte never reached the disk (its fdatasync did not return: it was never acknowledged).
  const file = path.join(dir, 'backup', 'redo');
  const buf = fs.readFileSync(file);
  const second = 8 + buf.readUInt32LE(0);
  const end = second + 8 + buf.readUInt32LE(second);
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.from([buf[end - 1]! ^ 0xff]), 0, 1, end - 1);
  fs.closeSync(fd);
  s = BackupState.open(dir);
  t.same(seqs(s), [1]);
  t.equal(s.get().appliedSeq, 1, 'the primary sends the rest again');
  await s.close();
});
