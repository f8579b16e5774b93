// The backup's applied state: its own small file of two checksummed slots (one fdatasync a batch), read back after
// a restart, the other slot when the newest is torn, and taken over from lmdb where an older version kept it.
import t from 'tap';
import { open } from 'lmdb';
import fs from 'node:fs';
import path from 'node:path';
import { BackupState } from '../dist/apply/state.js';
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
