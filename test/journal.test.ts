// The journal's acknowledgement path: the backup's applied seq releases waiters at once; the entries it covers leave
// lmdb with the next batch ('trimmed' then), and the seq survives a restart.
import t from 'tap';
import { Journal } from '../dist/journal/journal.js';
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
