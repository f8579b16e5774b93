// The backup sets a file's times once per run of writes and fsync markers, from the last stamp, and the trees'
// times still agree: with appends and fdatasyncs on several files, times set between them, and a rename among them.
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { Applier } from '../src/apply/applier.js';
import { supersededStamps } from '../src/apply/redo-log.js';
import type { JournalEntry, Stamp } from '../src/journal/entry.js';
import { drms, type layout, NATIVE_BINDING, sh, startPair, tmpdir } from './helpers/cluster.js';
import { mtimeDrift, snapshot } from './helpers/tree.js';

/** Nanosecond times through the mount need the native binding (fuse-native passes milliseconds). */

const at = (sec: number, p: string): Stamp => [p, [sec, 0], [sec, 500]];
let seq = 0;
const write = (p: string): JournalEntry => ({ op: 'write', path: p, offset: 0, data: Buffer.from('x'), seq: ++seq, ts: 0 });
const marker = (p: string, sec: number, also?: string): JournalEntry => ({ op: 'fsync', path: p, seq: ++seq, ts: 0, stamps: also ? [at(sec, p), at(sec, also)] : [at(sec, p)] });

t.test('a stamp is skipped only when a later one sets its path, with no change to what the path names between', async (t) => {
  const entries: JournalEntry[] = [
    write('/a'), marker('/a', 1), // set again by the next /a marker: skipped
    write('/b'), marker('/b', 2, '/c'), // /c is set again only after the commit: kept
    write('/a'), marker('/a', 3), // a rename of other names follows: skipped
    { op: 'rename', path: '/x', to: '/y', seq: ++seq, ts: 0 },
    marker('/a', 4), // kept: a commit swaps files in
    { op: 'txn-commit', txn: '1', paths: ['/a'], seq: ++seq, ts: 0 },
    marker('/a', 5), marker('/b', 6), marker('/a', 7), marker('/c', 8),
  ];
  t.same(supersededStamps(entries), [[], [true], [], [false, false], [], [true], [], [false], [], [true], [false], [false], [false]]);
  t.same(supersededStamps([]), []);
});

t.test('names changed in a directory: its times once, a file\'s until its name changes', async (t) => {
  const name = (op: 'create' | 'unlink', p: string, stamps: string[]): JournalEntry =>
    ({ ...(op === 'unlink' ? { op, path: p } : { op, path: p, mode: 0o644, uid: 0, gid: 0 }), seq: ++seq, ts: 0, stamps: stamps.map((s) => at(1, s)) });
  const rename = (from: string, to: string, stamps: string[]): JournalEntry => ({ op: 'rename', path: from, to, seq: ++seq, ts: 0, stamps: stamps.map((s) => at(1, s)) });
  const times = (p: string): JournalEntry => ({ op: 'times', path: p, seq: ++seq, ts: 0, stamps: [at(1, p)] });
  const entries: JournalEntry[] = [
    name('create', '/d/f', ['/d', '/d/f']), // both set again before any change to their names
    times('/d/f'), // kept: the rename takes the file away from /d/f
    rename('/d/f', '/d/g', ['/d', '/d/g']), // /d set again; /d/g is unlinked next
    name('unlink', '/d/g', ['/d']), // /d: set again by the create below (no change to the name /d)
    times('/e/x'), // kept: its parent is renamed away
    rename('/e', '/e2', ['/', '/e2']),
    rename('/e3', '/e', ['/', '/e']), // another /e, and /e/x another file
    times('/e/x'),
    name('create', '/d/f', ['/d', '/d/f']), // kept: /d is renamed away
    rename('/d', '/d.old', ['/']),
    times('/a'), // kept: the rename puts another file at /a
    rename('/c', '/a', ['/', '/a']),
  ];
  t.same(supersededStamps(entries), [[true, true], [false], [true, false], [true], [false], [true, false], [true, false], [false], [false, false], [true], [false], [false, false]]);
});

t.test('stamps owed for an entry that never came are set when the run stops', async (t) => {
  const dir = tmpdir(t);
  fs.writeFileSync(path.join(dir, 'f'), 'data');
  const applier = new Applier(dir, pino({ level: 'silent' }));
  t.equal(await applier.apply(marker('/f', 1_000_000_000), [true]), true);
  t.not(fs.statSync(path.join(dir, 'f')).mtimeMs, 1_000_000_000_000, 'a superseded stamp is not set at once');
  await applier.settleStamps();
  t.equal(fs.statSync(path.join(dir, 'f'), { bigint: true }).mtimeNs, 1_000_000_000_000_000_500n, 'it is set when the run stops before its successor');
  await applier.close();
});

const mtimeNs = (root: string, f: string) => fs.lstatSync(path.join(root, f), { bigint: true }).mtimeNs;

/** Once the backup has everything: both trees are identical, their times too, and `names`' to the nanosecond (native binding). */
async function timesAgree(t: Test, { prod, dr, pstate }: ReturnType<typeof layout>, names: string[]): Promise<void> {
  t.equal((await drms(['sync', '--state', pstate])).code, 0);
  const [p, b] = [await snapshot(prod), await snapshot(dr)];
  t.same(b.entries, p.entries, 'the backup is identical');
  t.same(mtimeDrift(p, b), [], 'times agree');
  if (NATIVE_BINDING) for (const f of names) t.equal(mtimeNs(dr, f), mtimeNs(prod, f), `${f}: the same mtime to the nanosecond`);
}

t.test('appends with fdatasync on several files, times set among them and a rename: the times agree (to the nanosecond on the native binding)', async (t) => {
  const l = await startPair(t);
  const { prod, dr } = l;
  await sh(`node -e '
    const fs = require("fs");
    const fds = ["a", "b", "c"].map((n) => fs.openSync(n + ".log", "a"));
    for (let i = 0; i < 300; i++) {
      const fd = fds[i % 3];
      fs.writeSync(fd, "record " + i + "\\n");
      fs.fdatasyncSync(fd);
      if (i === 100) fs.utimesSync("b.log", new Date("2011-01-01T00:00:00Z"), new Date("2012-02-02T00:00:00Z"));
      if (i === 200) fs.renameSync("c.log", "c2.log");
    }
    fs.futimesSync(fds[0], new Date("2013-03-03T00:00:00Z"), new Date("2014-04-04T00:00:00Z"));
    fs.fdatasyncSync(fds[0]);
    fds.forEach((fd) => fs.closeSync(fd));
  '`, prod);
  await timesAgree(t, l, ['a.log', 'b.log', 'c2.log']);
  t.equal(mtimeNs(dr, 'a.log'), BigInt(Date.UTC(2014, 3, 4)) * 1_000_000n, 'the last times set reached the backup');
});

t.test('files created, renamed and unlinked in directories, and a directory renamed over by another: the times agree, the directories\' too', async (t) => {
  const l = await startPair(t);
  await sh(`node -e '
    const fs = require("fs");
    for (const d of ["d", "e", "next"]) fs.mkdirSync(d);
    for (let i = 0; i < 300; i++) {
      fs.writeFileSync("d/f" + i, "data " + i);
      fs.renameSync("d/f" + i, "d/g" + i);
      if (i % 3) fs.unlinkSync("d/g" + i);
      fs.writeFileSync("e/x", "x" + i);
      if (i % 20 === 0) fs.writeFileSync("next/x", "");
      if (i % 20 === 19) {
        fs.renameSync("e", "e" + i);
        fs.renameSync("next", "e");
        fs.mkdirSync("next");
      }
    }
  '`, l.prod);
  await timesAgree(t, l, ['/', 'd', 'd/g0', 'e', 'e/x', 'e19', 'e19/x', 'e299/x']);
});
