// The backup's applier: a rename or an unlink does not wait for a flush of each file written before it; the batch's
// sync(), which comes before the batch is acknowledged, flushes those that still have a name, and closes them all.
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { Applier, writeRun, type WriteEntry } from '../src/apply/applier.js';
import { tryNativeAddon } from '../src/fs/native.js';
import type { JournalEntry } from '../src/journal/entry.js';
import { cachestat } from './helpers/cachestat.js';
import { tmpdir } from './helpers/cluster.js';

let seq = 0;
const entry = (e: Record<string, unknown>): JournalEntry => ({ ...e, seq: ++seq, ts: 0 }) as unknown as JournalEntry;

/**
 * Every flush of a file's data (fdatasync) or of a directory (fsync) from now to the test's end, by the name its
 * descriptor has at that moment: through the addon's flushFile, or Node's fs where the addon is not built.
 */
function flushes(t: Test, call: 'fdatasync' | 'fsync'): string[] {
  const seen: string[] = [];
  const note = (fd: number) => seen.push(fs.readlinkSync(`/proc/self/fd/${fd}`));
  const real = fs[call];
  fs[call] = ((fd: number, cb: fs.NoParamCallback) => {
    note(fd);
    real(fd, cb);
  }) as typeof fs.fsync;
  const addon = tryNativeAddon();
  const flushFile = addon?.flushFile;
  if (addon && flushFile) {
    addon.flushFile = (fd, data, ...span) => {
      if (data === (call === 'fdatasync')) note(fd);
      return flushFile(fd, data, ...span);
    };
  }
  t.teardown(() => {
    fs[call] = real;
    if (addon && flushFile) addon.flushFile = flushFile;
  });
  return seen;
}

t.test('names change without a flush of each file; the batch\'s sync flushes the named ones and closes every one', async (t) => {
  const dir = fs.realpathSync(tmpdir(t));
  const applier = new Applier(dir, pino({ level: 'silent' }));
  const flushed = flushes(t, 'fdatasync');
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

t.test('an unlink flushes its directory only when a name went; other open files stay open', async (t) => {
  const dir = fs.realpathSync(tmpdir(t));
  fs.mkdirSync(path.join(dir, 'd'));
  const applier = new Applier(dir, pino({ level: 'silent' }));
  const flushed = flushes(t, 'fsync'); // a directory's flush
  fs.writeFileSync(path.join(dir, 'open'), '');
  t.equal(await applier.apply(entry({ op: 'write', path: '/open', offset: 0, data: Buffer.from('a') })), true);
  const fds = () => fs.readdirSync('/proc/self/fd').length;
  const held = fds();
  t.equal(await applier.apply(entry({ op: 'unlink', path: '/d/never-made' })), true, 'a name that is not there: done already');
  t.equal(await applier.apply(entry({ op: 'write', path: '/open', offset: 1, data: Buffer.from('b') })), true);
  t.equal(fds(), held, 'the written file stayed open through the unlink');
  await applier.sync();
  t.same(flushed, [], 'nothing changed in the directory: it is not flushed');
  fs.writeFileSync(path.join(dir, 'd', 'there'), 'x');
  t.equal(await applier.apply(entry({ op: 'unlink', path: '/d/there' })), true);
  await applier.sync();
  t.same(flushed, [path.join(dir, 'd')], 'a name went: its directory is flushed');
  t.equal(fs.readFileSync(path.join(dir, 'open'), 'utf8'), 'ab');
  await applier.close();
});

t.test('appends to one file, in seq order, each where the one before ended, are one run; anything else ends it', async (t) => {
  const w = (p: string, offset: number, n: number, extra: Record<string, unknown> = {}) => entry({ op: 'write', path: p, offset, data: Buffer.alloc(n, 0x61), ...extra });
  const run = [w('/a', 0, 10), w('/a', 10, 5), w('/a', 15, 0), w('/a', 15, 1)];
  t.equal(writeRun(run, 0), 4, 'four appends, one of them empty');
  t.equal(writeRun(run, 2), 2, 'from the middle: what follows');
  const ends = (e: JournalEntry) => writeRun([w('/f', 0, 8), e], 0);
  t.equal(ends(w('/g', 8, 1)), 1, 'another file');
  t.equal(ends(w('/f', 9, 1)), 1, 'a hole before it');
  t.equal(ends(w('/f', 4, 1)), 1, 'an overwrite of what came before');
  t.equal(ends(w('/f', 8, 1, { txn: 'T1' })), 1, 'a transaction\'s write (staged until its commit)');
  t.equal(ends(w('/f', 8, 1, { stamps: [['/f', [1, 0], [1, 0]]] })), 1, 'a write whose times follow it');
  t.equal(ends(entry({ op: 'truncate', path: '/f', size: 8 })), 1, 'another operation');
  seq += 5;
  t.equal(ends(w('/f', 8, 1)), 1, 'a gap in the seqs');
  t.equal(writeRun([entry({ op: 'times', path: '/f' }), w('/f', 0, 1)], 0), 1, 'not a write: applied alone');
  let at = 0;
  const long = Array.from({ length: 1500 }, () => w('/long', (at += 2) - 2, 2));
  t.equal(writeRun(long, 0), 1024, 'at most 1024 entries (one pwritev\'s buffers)');
});

t.test('a run of writes is applied with one pwritev; where the file cannot be written it says so and writes nothing', async (t) => {
  const dir = fs.realpathSync(tmpdir(t));
  fs.writeFileSync(path.join(dir, 'log'), 'head:');
  fs.mkdirSync(path.join(dir, 'a-directory'));
  const applier = new Applier(dir, pino({ level: 'silent' }));
  const calls: number[] = [];
  const writev = fs.writevSync;
  fs.writevSync = ((fd: number, buffers: NodeJS.ArrayBufferView[], position?: number) => {
    calls.push(buffers.length);
    return writev(fd, buffers, position);
  }) as typeof fs.writevSync;
  t.teardown(() => {
    fs.writevSync = writev;
  });
  const records = Array.from({ length: 300 }, (_, i) => Buffer.from(`record ${i};`));
  let offset = 5;
  const run = records.map((data) => entry({ op: 'write', path: '/log', offset: (offset += data.length) - data.length, data }) as WriteEntry);
  t.equal(writeRun(run, 0), 300);
  t.equal(await applier.applyWrites(run), Buffer.concat(records).length, 'written: every record\'s bytes');
  t.same(calls, [300], 'one pwritev of 300 buffers');
  await applier.sync();
  t.equal(fs.readFileSync(path.join(dir, 'log'), 'utf8'), 'head:' + records.join(''), 'every record, in order, after what was there');

  // Short writes: each call writes the first buffer and three bytes of the next.
  fs.writevSync = ((fd: number, buffers: NodeJS.ArrayBufferView[], position?: number) => {
    calls.push(buffers.length);
    const [first, second] = buffers as Buffer[];
    return writev(fd, second ? [first!, second.subarray(0, 3)] : [first!], position);
  }) as typeof fs.writevSync;
  calls.length = 0;
  const more = ['alpha;', 'beta;', 'gamma;'].map((text) => entry({ op: 'write', path: '/log', offset: (offset += text.length) - text.length, data: Buffer.from(text) }) as WriteEntry);
  t.equal(await applier.applyWrites(more), 'alpha;beta;gamma;'.length);
  t.same(calls, [3, 2, 1], 'short writes: the rest is written from where each ended');
  await applier.sync();
  t.equal(fs.readFileSync(path.join(dir, 'log'), 'utf8'), 'head:' + records.join('') + 'alpha;beta;gamma;', 'whole, in order');

  const refused = [entry({ op: 'write', path: '/a-directory', offset: 0, data: Buffer.from('x') }) as WriteEntry];
  t.equal(await applier.applyWrites(refused), undefined, 'a directory cannot be opened for writing: nothing written, for apply() to say which entry failed');
  t.equal(await applier.apply(refused[0]!), false, 'as apply() says of the entry');
  await t.rejects(applier.applyWrites([entry({ op: 'write', path: '/../escape', offset: 0, data: Buffer.from('x') }) as WriteEntry]), { name: 'PathEscapeError' }, 'a path that escapes the target is refused, as apply() refuses it');
  await applier.close();
});

t.test('flushFilesystem writes out the dirty pages of the target\'s filesystem (what a killed backup left)', async (t) => {
  const dir = fs.realpathSync(tmpdir(t));
  const file = path.join(dir, 'unflushed');
  fs.writeFileSync(file, Buffer.alloc(1 << 20, 1));
  const dirty = () => {
    const s = cachestat(file);
    return s.dirty + s.writeback;
  };
  t.ok(dirty() > 0, 'the file\'s pages are dirty');
  const applier = new Applier(dir, pino({ level: 'silent' }));
  await applier.flushFilesystem();
  t.equal(dirty(), 0, 'written out');
  await applier.close();
  const gone = new Applier(path.join(dir, 'missing'), pino({ level: 'silent' }));
  await t.rejects(gone.flushFilesystem(), /could not flush the target's filesystem at .*missing: ENOENT/, 'a target that is not there: said so');
});
