// The backup's applier: a rename or an unlink does not wait for a flush of each file written before it; the batch's
// sync(), which comes before the batch is acknowledged, flushes those that still have a name, and closes them all.
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { Applier } from '../src/apply/applier.js';
import { tryNativeAddon } from '../src/fs/native.js';
import type { JournalEntry } from '../src/journal/entry.js';
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

t.test('flushFilesystem writes out the dirty pages of the target\'s filesystem (what a killed backup left)', async (t) => {
  const dir = fs.realpathSync(tmpdir(t));
  const file = path.join(dir, 'unflushed');
  fs.writeFileSync(file, Buffer.alloc(1 << 20, 1));
  // Dirty pages of the file, by cachestat(2) (Linux 6.5+), through python's ctypes: Node has no binding for it.
  const dirty = () => Number(execFileSync('python3', ['-c', CACHESTAT, file], { encoding: 'utf8' }).trim());
  t.ok(dirty() > 0, 'the file\'s pages are dirty');
  const applier = new Applier(dir, pino({ level: 'silent' }));
  await applier.flushFilesystem();
  t.equal(dirty(), 0, 'written out');
  await applier.close();
  const gone = new Applier(path.join(dir, 'missing'), pino({ level: 'silent' }));
  await t.rejects(gone.flushFilesystem(), /could not flush the target's filesystem at .*missing: ENOENT/, 'a target that is not there: said so');
});

const CACHESTAT = `
import ctypes, os, sys
class Range(ctypes.Structure): _fields_ = [('off', ctypes.c_uint64), ('len', ctypes.c_uint64)]
class Stat(ctypes.Structure): _fields_ = [(n, ctypes.c_uint64) for n in ('cache', 'dirty', 'writeback', 'evicted', 'recently_evicted')]
fd = os.open(sys.argv[1], os.O_RDONLY)
r, s = Range(0, 0), Stat()
if ctypes.CDLL(None, use_errno=True).syscall(451, fd, ctypes.byref(r), ctypes.byref(s), 0) != 0: sys.exit('cachestat failed')
print(s.dirty + s.writeback)
`;
