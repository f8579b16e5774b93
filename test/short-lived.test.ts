// Files a batch creates and removes again are not made on the backup: what is left of them is applied (the names
// their renames replaced, their directories' times), and the trees still agree.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { withoutShortLived } from '../src/apply/short-lived.js';
import { namesExist, tryNativeAddon } from '../src/fs/native.js';
import type { JournalEntry, Stamp } from '../src/journal/entry.js';
import { sendBatch } from './helpers/batch.js';
import { drms, sh, startBackup, startPair, tmpdir, writeSecret } from './helpers/cluster.js';
import { mtimeDrift, snapshot } from './helpers/tree.js';

const at = (p: string, sec = 1): Stamp => [p, [sec, 0], [sec, 0]];
let seq = 0;
const entry = (e: Record<string, unknown>, ...stamped: string[]): JournalEntry =>
  ({ ...e, seq: ++seq, ts: 0, ...(stamped.length ? { stamps: stamped.map((p) => at(p)) } : {}) }) as JournalEntry;
const create = (p: string) => entry({ op: 'create', path: p, mode: 0o644, uid: 0, gid: 0 }, p, path.posix.dirname(p));
const write = (p: string) => entry({ op: 'write', path: p, offset: 0, data: Buffer.from('x') });
const rename = (p: string, to: string) => entry({ op: 'rename', path: p, to }, to, path.posix.dirname(p));
const unlink = (p: string) => entry({ op: 'unlink', path: p }, path.posix.dirname(p));
/** Each entry as applied: its op, the path it acts on, the paths it stamps. */
const shape = (entries: JournalEntry[]) => entries.map((e) => [e.op, 'to' in e ? e.to : 'path' in e ? e.path : '', (e.stamps ?? []).map(([p]) => p)]);
const unchanged = (entries: JournalEntry[]) => shape(entries);

t.test('a file created, written, renamed and unlinked in one batch: markers, and an unlink of the name it took', async (t) => {
  const entries = [create('/d/tmp1'), write('/d/tmp1'), entry({ op: 'times', path: '/d/tmp1' }, '/d/tmp1'), rename('/d/tmp1', '/d/tmp2'), write('/d/tmp2'), unlink('/d/tmp2')];
  const out = withoutShortLived(entries, new Set());
  t.same(shape(out.entries), [['none', '', ['/d']], ['none', '', []], ['none', '', []], ['unlink', '/d/tmp2', ['/d']], ['none', '', []], ['none', '', ['/d']]]);
  t.same(out.entries.map((e) => e.seq), entries.map((e) => e.seq), 'every seq stays, in order');
  t.same(out.creates, ['/d/tmp1'], 'the create taken out is named (the backup checks that it made no file there)');
});

t.test('the creates taken out are looked up together: a name there, or one that cannot be looked up, counts as there', async (t) => {
  t.ok(tryNativeAddon(), 'the addon is built: one trip through the pool looks them all up');
  const dir = tmpdir(t);
  fs.writeFileSync(path.join(dir, 'file'), 'x');
  fs.symlinkSync('nowhere', path.join(dir, 'dangling'));
  const paths = ['file', 'missing', 'dangling', 'file/under-a-file', 'missing/under-a-missing-dir'].map((p) => path.join(dir, p));
  t.same(await namesExist(paths), [true, false, true, true, false], 'a file, a missing name, a dangling link, a name under a file, a name under a missing directory');
  t.same(await namesExist([]), [], 'none');
});

t.test('a file applied as it came: one that outlives the batch, or may', async (t) => {
  const cases: Array<[string, JournalEntry[], Set<string>?]> = [
    ['its name existed on the target (the create opened a file that may have other links)', [create('/a'), write('/a'), unlink('/a')], new Set(['/a'])],
    ['not unlinked in the batch', [create('/a'), write('/a'), rename('/a', '/b')]],
    ['an earlier entry touched its name', [unlink('/a'), create('/a'), unlink('/a')]],
    ['an earlier entry touched its directory', [entry({ op: 'mkdir', path: '/d', mode: 0o755, uid: 0, gid: 0 }), create('/d/a'), unlink('/d/a')]],
    ['linked to another name', [create('/a'), entry({ op: 'link', path: '/a', to: '/b' }), unlink('/a')]],
    ['renamed over by another file', [create('/a'), rename('/c', '/a'), unlink('/a')]],
    ['its directory renamed', [create('/d/a'), rename('/d', '/e'), unlink('/e/a')]],
    ['a transaction committed meanwhile', [create('/a'), entry({ op: 'txn-commit', txn: '1', paths: ['/x'] }), unlink('/a')]],
    ['written in a transaction', [create('/a'), entry({ op: 'write', path: '/a', offset: 0, data: Buffer.from('x'), txn: '1' }), unlink('/a')]],
    ['an entry from the wire whose path is not a string came before its unlink (the target refuses it, and says why)', [create('/a'), entry({ op: 'unlink', path: 42 }), unlink('/a')]],
  ];
  for (const [why, entries, existing] of cases) t.same(shape(withoutShortLived(entries, existing ?? new Set()).entries), unchanged(entries), why);
});

t.test('a short-lived file renamed over another one: that one is applied as it came, then removed', async (t) => {
  const entries = [create('/other'), create('/tmp'), rename('/tmp', '/other'), unlink('/other'), create('/keep'), unlink('/gone')];
  t.same(shape(withoutShortLived(entries, new Set()).entries), [
    ['create', '/other', ['/other', '/']], ['none', '', ['/']], ['unlink', '/other', ['/']], ['none', '', ['/']],
    ['create', '/keep', ['/keep', '/']], ['unlink', '/gone', ['/']],
  ]);
});

t.test('a batch of 20,000 files that stay and 20,000 that go is rewritten in one pass', async (t) => {
  const entries: JournalEntry[] = [];
  for (let i = 0; i < 20_000; i++) entries.push(create(`/keep/${i}`), create(`/tmp/${i}`), write(`/tmp/${i}`), unlink(`/tmp/${i}`));
  const out = withoutShortLived(entries, new Set()).entries;
  t.equal(out.filter((e) => e.op === 'create').length, 20_000, 'the files that stay are created');
  t.equal(out.filter((e) => e.op === 'none').length, 60_000, 'the others are markers');
});

t.test('a backup sent a create over a file it has (with a second link), a write and an unlink applies them as they came', async (t) => {
  const dir = tmpdir(t);
  const dr = path.join(dir, 'dr');
  fs.mkdirSync(dr);
  fs.writeFileSync(path.join(dr, 'shared'), 'original');
  fs.linkSync(path.join(dr, 'shared'), path.join(dr, 'shared-link'));
  const secretFile = writeSecret(dir);
  const backup = await startBackup(t, { target: dr, state: path.join(dir, 'bstate'), secret: secretFile });
  const r = await sendBatch(backup.port, Buffer.from(fs.readFileSync(secretFile, 'utf8')), 'linked', [
    { seq: 1, op: 'create', path: '/shared', mode: 0o644, uid: 0, gid: 0 },
    { seq: 2, op: 'write', path: '/shared', offset: 0, data: Buffer.from('changed') },
    { seq: 3, op: 'unlink', path: '/shared' },
    { seq: 4, op: 'create', path: '/scratch', mode: 0o644, uid: 0, gid: 0 },
    { seq: 5, op: 'unlink', path: '/scratch' },
  ]);
  t.same(r.body, { appliedSeq: 5 });
  t.same(fs.readdirSync(dr).sort(), ['shared-link'], 'the name is gone, the scratch file too');
  t.equal(fs.readFileSync(path.join(dr, 'shared-link'), 'utf8'), 'changed', 'the file it named has the write (as taken out, it would not)');
});

t.test('temporary files through the mount: saved over a table, linked, in a renamed directory, short-lived; the sites agree', async (t) => {
  const l = await startPair(t);
  fs.writeFileSync(path.join(l.prod, 'config.table'), 'old\n');
  fs.mkdirSync(path.join(l.prod, 'work'));
  t.equal((await drms(['sync', '--state', l.pstate])).code, 0);
  await sh(`node -e '
    const fs = require("fs");
    for (let i = 0; i < 300; i++) {
      // An editor saving: the new table is written aside and renamed over the old one.
      fs.writeFileSync("config.tmp", "version " + i + "\\n");
      fs.renameSync("config.tmp", "config.table");
      // A scratch file, renamed, then removed.
      fs.writeFileSync("work/s" + i, "scratch " + i);
      fs.renameSync("work/s" + i, "work/t" + i);
      fs.unlinkSync("work/t" + i);
      // A file kept under a second name once its first is removed.
      fs.writeFileSync("work/l" + i, "linked " + i);
      if (i % 10 === 0) { fs.linkSync("work/l" + i, "work/kept" + i); }
      fs.unlinkSync("work/l" + i);
      // A file written in a directory renamed before the file is removed.
      if (i % 50 === 0) {
        fs.mkdirSync("dir" + i);
        fs.writeFileSync("dir" + i + "/f", "in a dir");
        fs.renameSync("dir" + i, "moved" + i);
        fs.unlinkSync("moved" + i + "/f");
      }
    }
  '`, l.prod);
  t.equal((await drms(['sync', '--state', l.pstate, '--timeout', '60'])).code, 0);
  const [p, b] = [await snapshot(l.prod), await snapshot(l.dr)];
  t.same(b.entries, p.entries, 'content, names, modes and times (to the second) match');
  t.same(mtimeDrift(p, b), [], 'times match to the microsecond, the directories\' too');
  t.equal(fs.readFileSync(path.join(l.dr, 'config.table'), 'utf8'), 'version 299\n', 'the last table saved is the backup\'s');
  t.equal(fs.readdirSync(path.join(l.dr, 'work')).filter((n) => n.startsWith('kept')).length, 30, 'the linked files are there');
});
