// The page cache of large writes is given back once they are on disk: on the primary, its real files' (the mount's
// own cache holds what the application wrote), and on the backup, its copy's. Small writes' pages stay cached.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { tryNativeAddon, WrittenSpan } from '../dist/fs/native.js';
import { cachestat } from './helpers/cachestat.js';
import { drms, NATIVE_BINDING, sh, startPair, tmpdir } from './helpers/cluster.js';

const MiB = 2 ** 20;

/** Bytes of `file` in the page cache. */
function resident(file: string): number {
  return Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file], { encoding: 'utf8' }).trim());
}

/** Until `file` has at most `most` bytes cached, or 15 s; what it had last. */
async function residentFalls(file: string, most: number): Promise<number> {
  let now = resident(file);
  for (let i = 0; i < 300 && now > most; i++) {
    await sleep(50);
    now = resident(file);
  }
  return now;
}

/** The process's descriptors of `file` (as /proc names it), as /proc/<pid>/fd paths. */
function descriptorsOf(pid: number, file: string): string[] {
  const fds = `/proc/${pid}/fd`;
  return fs.readdirSync(fds).map((n) => path.join(fds, n)).filter((fd) => {
    try {
      return fs.readlinkSync(fd) === file;
    } catch {
      return false;
    }
  });
}

/** The real directory beneath the primary's mount: the descriptor it opened before mounting. */
function beneath(pid: number, mount: string): string {
  const [fd] = descriptorsOf(pid, mount);
  if (!fd) throw new Error(`the primary holds no descriptor of ${mount}`);
  return fd;
}

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

t.test('large writes are no longer cached once on disk, on both sites; small writes stay cached; nothing changes', async (t) => {
  const { prod, dr, pstate, primary } = await startPair(t);
  await primary.waitFor('connected to backup; shipping');
  const src = path.join(tmpdir(t, 'page-cache-src'), 'big.src');
  fs.writeFileSync(src, Buffer.alloc(16 * MiB, 0).map((_, i) => (i * 2654435761) >>> 24));

  // 1 MiB writes, then 4 KiB ones, each file flushed; then a new name: the primary syncs its tree before it (its
  // fdatasyncs were answered by the capture log alone), and the backup flushes its files when names change.
  await sh(`dd if=${src} of=big.dat bs=1M conv=fdatasync status=none && dd if=${src} of=small.log bs=4k count=512 conv=fdatasync status=none && : > marker`, prod);
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '30'])).code, 0, 'the backup applied everything');

  const real = beneath(primary.proc.pid!, prod);
  if (NATIVE_BINDING) {
    const left = await residentFalls(path.join(real, 'big.dat'), MiB);
    t.ok(left <= MiB, `primary: the real file's 16 MiB of 1 MiB writes are no longer cached (${left} bytes are)`);
    // Every page cached, or evicted by the kernel's reclaim: this machine runs DAMON, which pages out memory it finds
    // idle, page cache included, and took a few of these pages in two CI runs. drms's drop leaves no trace.
    const small = cachestat(path.join(real, 'small.log'));
    t.equal(small.cache + small.evicted, 512, `primary: the 4 KiB writes stay cached (${small.cache} of 512 pages; reclaim took ${small.evicted})`);
  }
  const left = await residentFalls(path.join(dr, 'big.dat'), MiB);
  t.ok(left <= MiB, `backup: its copy of the 1 MiB writes is no longer cached (${left} bytes are)`);

  const want = sha(fs.readFileSync(src));
  t.equal(sha(fs.readFileSync(path.join(dr, 'big.dat'))), want, 'the backup read back from the disk: the same bytes');
  t.equal((await sh('sha256sum big.dat', prod)).split(' ')[0], want, 'the file read through the mount: the same bytes');
  t.equal(sha(fs.readFileSync(path.join(real, 'big.dat'))), want, 'the primary\'s real file read back from the disk: the same bytes');
  t.equal(sha(fs.readFileSync(path.join(dr, 'small.log'))), sha(fs.readFileSync(src).subarray(0, 2 * MiB)), 'the small writes on the backup');
});

t.test('primary: a file written without fsync gives its pages back at the checkpoint before the capture logs swap', { skip: !NATIVE_BINDING && 'captured writes are the native binding\'s' }, async (t) => {
  const { prod, pstate, primary } = await startPair(t);
  await primary.waitFor('connected to backup; shipping');
  // 96 MiB: the capture log passes 64 MiB, and the tree is synced before the other log takes over (the journal's
  // tick, each second). The file stays open meanwhile: a file closed with no flush keeps its pages.
  const real = path.join(beneath(primary.proc.pid!, prod), 'big.dat');
  await sh(`(dd if=/dev/urandom bs=1M count=96 iflag=fullblock status=none; for i in $(seq 100); do [ "$(fincore -bno RES ${real})" -le ${48 * MiB} ] && break; sleep 0.1; done) > big.dat`, prod);
  const left = resident(real);
  t.ok(left <= 48 * MiB, `what was written before the swap is no longer cached (${left / MiB} MiB of 96 are)`);
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0, 'the backup applied everything');
  t.equal((await sh('sha256sum big.dat', prod)).split(' ')[0], sha(fs.readFileSync(real)), 'the mount and the real file: the same bytes');
});

t.test('primary: a file whose fdatasync the capture log answered, closed before the tree was synced, gives its pages back at the next name change', { skip: !NATIVE_BINDING && 'captured writes are the native binding\'s' }, async (t) => {
  const { prod, pstate, primary } = await startPair(t);
  await primary.waitFor('connected to backup; shipping');
  const real = path.join(beneath(primary.proc.pid!, prod), 'big.dat');
  // The first fdatasync flushes the file (a name was made since the last checkpoint) and brings on a checkpoint;
  // the second is answered by the capture log alone, and the file is closed before anything syncs the tree.
  await sh(`python3 -c '
import os, time
fd = os.open("big.dat", os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, os.urandom(1 << 20)); os.fdatasync(fd); time.sleep(0.5)
for i in range(16): os.write(fd, os.urandom(1 << 20))
os.fdatasync(fd); os.close(fd)'`, prod);
  await sleep(500); // the release is served after close(2) returns
  t.ok(resident(real) >= 16 * MiB, 'closed: its 16 MiB still cached (their fdatasync flushed only the capture log)');
  const held = () => descriptorsOf(primary.proc.pid!, path.join(prod, 'big.dat')).length;
  t.equal(held(), 1, 'the primary holds the file open for that (a duplicate of the released handle\'s descriptor)');
  await sh(': > marker', prod); // a new name: the tree is synced before it
  const left = await residentFalls(real, MiB);
  t.ok(left <= MiB, `the tree synced: no longer cached (${left} bytes are)`);
  t.equal(held(), 0, 'and holds it open no more');
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0, 'the backup applied everything');
  t.equal((await sh('sha256sum big.dat', prod)).split(' ')[0], sha(fs.readFileSync(real)), 'the mount and the real file: the same bytes');
});

t.test('WrittenSpan: flushed off the JavaScript thread, then its pages given back once they add up to 1 MiB; errors carry their code', { skip: !tryNativeAddon() && 'the addon is not built' }, async (t) => {
  const file = path.join(tmpdir(t, 'written-span'), 'f');
  const fd = fs.openSync(file, 'w+');
  t.teardown(() => fs.closeSync(fd));
  const span = new WrittenSpan();
  const write = (offset: number, length: number) => {
    fs.writeSync(fd, Buffer.alloc(length, offset & 0xff), 0, length, offset);
    span.note(offset, length);
  };
  write(0, 512 * 1024);
  await span.flush(fd, true);
  t.equal(resident(file), 512 * 1024, 'half a MiB flushed: its pages stay, the span gathers more');
  write(512 * 1024, MiB + 100);
  await span.flush(fd, false);
  t.equal(resident(file), 4096, 'a MiB and a half, on disk: its pages are given back but for the last one, written in part');
  t.equal(fs.fstatSync(fd).size, 1.5 * MiB + 100, 'the file has them all');
  write(1.5 * MiB + 100, 4096);
  await span.flush(fd, true);
  t.equal(resident(file), 4096 + 4096, 'a page\'s write after them: the span starts again, and its pages stay');

  const closed = fs.openSync(file, 'r');
  fs.closeSync(closed);
  await t.rejects(span.flush(closed, true), { code: 'EBADF', errno: -9 }, 'a flush that fails rejects with the code and errno Node\'s fs errors have');
});
