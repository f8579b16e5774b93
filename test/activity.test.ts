// Activity counters: an operation journaled on the primary waits for the backup's acknowledgement, whose wait is
// measured per file; one applied on the backup is counted and waits for nothing (it is never acknowledged there).
import t from 'tap';
import { Activity } from '../src/admin/activity.js';
import { tmpdir } from './helpers/cluster.js';

t.test('the primary measures each file\'s wait for the acknowledgement; the backup queues nothing', async (t) => {
  const primary = new Activity(tmpdir(t), () => 'other');
  t.teardown(() => primary.close());
  primary.record(1, 'write', '/ledger', 256, 1000);
  primary.record(2, 'write', '/ledger', 256, 1010);
  t.equal(primary.waiting, 2, 'journaled: both wait for the backup');
  primary.acked(2, 1250);
  t.equal(primary.waiting, 0);
  t.equal(primary.files(2)[0]!.maxLag, 0.25, 'the file\'s longest wait, in seconds');

  const backup = new Activity(tmpdir(t), () => 'other');
  t.teardown(() => backup.close());
  for (let seq = 1; seq <= 1000; seq++) backup.applied(seq, 'write', '/ledger', 256, 1000 + seq);
  t.equal(backup.waiting, 0, 'applied on the backup: counted, queued nowhere (nothing would ever take it out)');
  t.equal(backup.opsByKind.get('write'), 1000);
  t.equal(backup.files(1000)[0]!.ops, 1000);
});
