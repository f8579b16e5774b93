// The backup's applier: a rename or an unlink does not wait for a flush of each file written before it; the batch's
// sync(), which comes before the batch is acknowledged, flushes those that still have a name, and closes them all.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { Applier } from '../src/apply/applier.js';
import type { JournalEntry } from '../src/journal/entry.js';
import { tmpdir } from './helpers/cluster.js';

let seq = 0;
const entry = (e: Record<string, unknown>): JournalEntry => ({ ...e, seq: ++seq, ts: 0 }) as unknown as JournalEntry;

t.test('names change without a flush of each file; the batch\'s sync flushes the named ones and closes every one', async (t) => {
  const dir = fs.realpathSync(tmpdir(t));
  const applier = new Applier(dir, pino({ level: 'silent' }));
  // Every fdatasync, by the name its descriptor has at that moment.
  const fdatasync = fs.fdatasync;
  const flushed: string[] = [];
  fs.fdatasync = ((fd: number, cb: fs.NoParamCallback) => {
    flushed.push(fs.readlinkSync(`/proc/self/fd/${fd}`));
    fdatasync(fd, cb);
  }) as typeof fs.fdatasync;
  t.teardown(() => {
    fs.fdatasync = fdatasync;
  });
  const open = () => fs.readdirSync('/proc/self/fd').length;
  const before = open();

  for (const e of [
    entry({ op: 'create', path: '/kept', mode: 0o644, uid: -1, gid: -1 }),
    entry({ op: 'write', path: '/kept', offset: 0, data: Buffer.from('kept data') }),
    entry({ op: 'rename', path: '/kept', to: '/renamed' }),
    entry({ op: 'create', path: '/temp', mode: 0o644, uid: -1, gid: -1 }),
    entry({ op: 'write', path: '/temp', offset: 0, data: Buffer.from('temp data') }),
    entry({ op: 'unlink', path: '/temp' }),
  ]) t.equal(await applier.apply(e), true, `${e.op} ${'path' in e ? e.path : ''}`);
  t.same(flushed, [], 'no file was flushed while names changed');
  await applier.sync();
  t.same(flushed, [path.join(dir, 'renamed')], 'the batch\'s sync flushed the renamed file, not the unlinked one');
  t.equal(open(), before, 'and closed both');
  t.equal(fs.readFileSync(path.join(dir, 'renamed'), 'utf8'), 'kept data');
  t.notOk(fs.existsSync(path.join(dir, 'temp')), 'the unlinked file is gone');
  await applier.close();
});
