// Namespace changes (create, mkdir, symlink, link, rename, unlink, rmdir) served on libfuse's threads (native
// binding): journaled in order with the writes around them, mirrored with the times they leave, and sent back to
// JavaScript whenever it must decide (a transaction holds a file, the policy has edges, a class declares a VOS
// organization); record formats known by name do not outlive a move, and a new critical file is still an event.
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { drms, layout, NATIVE_BINDING, outcome, startBackup, startPair, startPrimary } from './helpers/cluster.js';
import { mtimeDrift, snapshot } from './helpers/tree.js';
import { RecordFile, Transaction } from '../dist/vos/record-file.js';

const skip = NATIVE_BINDING ? false : 'the fuse-native binding serves every namespace change in JavaScript';

async function pair(t: Test) {
  const l = await startPair(t);
  const synced = async () => t.equal((await drms(['sync', '--state', l.pstate, '--timeout', '60'])).code, 0, 'the backup has applied everything');
  const servedNatively = async () => (JSON.parse((await drms(['status', '--state', l.pstate, '--json'])).stdout) as { namesServedNatively: number }).namesServedNatively;
  return { ...l, synced, servedNatively };
}

t.test('every namespace change is served natively, in order with the writes around them', { skip }, async (t) => {
  const { prod, dr, synced, servedNatively } = await pair(t);
  fs.mkdirSync(path.join(prod, 'in'));
  fs.mkdirSync(path.join(prod, 'out'), 0o750);
  let changes = 2;
  for (let i = 0; i < 60; i++) {
    const tmp = path.join(prod, 'in', `batch-${i}.tmp`);
    fs.writeFileSync(tmp, `batch ${i}\n`);
    fs.appendFileSync(tmp, 'more\n'); // an open: the name exists
    fs.renameSync(tmp, path.join(prod, 'out', 'current.dat')); // across directories, over the last one
    changes += 2;
    if (i % 3 === 0) {
      fs.mkdirSync(path.join(prod, 'in', `d${i}`));
      fs.rmdirSync(path.join(prod, 'in', `d${i}`));
      changes += 2;
    }
    if (i % 4 === 0) {
      fs.linkSync(path.join(prod, 'out', 'current.dat'), path.join(prod, 'in', `hard-${i}`));
      fs.symlinkSync(`../out/kept-${i % 5}.dat`, path.join(prod, 'in', `latest-${i}`));
      changes += 2;
    }
    if (i % 2 === 0) {
      fs.writeFileSync(path.join(prod, `gone-${i}`), 'x');
      fs.unlinkSync(path.join(prod, `gone-${i}`));
      changes += 2;
    }
    fs.renameSync(path.join(prod, 'out', 'current.dat'), path.join(prod, 'out', `kept-${i % 5}.dat`));
    changes++;
  }
  t.equal(await outcome(() => fs.promises.rename(path.join(prod, 'missing'), path.join(prod, 'x'))), 'ENOENT', 'a failing rename fails as on ext4');
  t.equal(await outcome(() => fs.promises.rmdir(path.join(prod, 'out'))), 'ENOTEMPTY', 'and a failing rmdir');
  t.equal(await outcome(() => fs.promises.unlink(path.join(prod, 'in'))), 'EISDIR', 'and an unlink of a directory');
  t.equal(await outcome(() => fs.promises.writeFile(path.join(prod, 'nowhere', 'x'), '')), 'ENOENT', 'and a create in no directory');
  t.equal(await outcome(() => fs.promises.mkdir(path.join(prod, 'out'))), 'EEXIST', 'and a mkdir of a name taken');
  t.equal(await outcome(() => fs.promises.symlink('x', path.join(prod, 'out'))), 'EEXIST', 'and a symlink');
  t.equal(await outcome(() => fs.promises.link(path.join(prod, 'in', 'hard-0'), path.join(prod, 'out', 'kept-0.dat'))), 'EEXIST', 'and a link');
  t.equal(await servedNatively(), changes, `the ${changes} changes were served natively (the failed ones count none)`);
  await synced();
  const [p, b] = [await snapshot(prod), await snapshot(dr)];
  t.same(b.entries, p.entries, 'the sites are identical: content, modes, owners, symlinks');
  t.same(b.linkGroups, p.linkGroups, 'hard links alike');
  t.same(mtimeDrift(p, b), [], 'directories and files carry the same times');
  t.equal(fs.readFileSync(path.join(dr, 'out', 'kept-4.dat'), 'utf8'), 'batch 59\nmore\n', 'the last batch under its last name');
});

t.test('a record file renamed natively over a plain one brings its record rules to the name', { skip }, async (t) => {
  const { prod, dr, synced, servedNatively } = await pair(t);
  const name = path.join(prod, 'cards.table');
  fs.writeFileSync(name, 'plain, for now');
  fs.appendFileSync(name, '!'); // the mount now knows this name as a plain file
  const staged = path.join(prod, 'cards.staged');
  const fixed = await RecordFile.create(staged, { organization: 'fixed', recordSize: 8 });
  await fixed.append(Buffer.from('AAAAAAAA'));
  await fixed.close();
  const before = await servedNatively();
  fs.renameSync(staged, name);
  t.equal(await servedNatively(), before + 1, 'the rename was served natively');
  const fh = await fs.promises.open(name, 'r+');
  try {
    t.equal(await outcome(() => fh.write(Buffer.from('CCCC'), 0, 4, 8)), 'EINVAL', 'a partial record at the name is refused');
    t.equal(await outcome(() => fh.write(Buffer.from('BBBBBBBB'), 0, 8, 8)), 'ok', 'a whole record is taken');
  } finally {
    await fh.close();
  }
  await synced();
  t.equal(fs.readFileSync(path.join(dr, 'cards.table'), 'utf8'), 'AAAAAAAABBBBBBBB', 'the backup has the records');
  t.same((await snapshot(dr)).entries, (await snapshot(prod)).entries, 'the sites are identical');
});

t.test('while a transaction is open, renames and unlinks go to JavaScript, which refuses those of its files', { skip }, async (t) => {
  const { prod, dr, synced, servedNatively } = await pair(t);
  const held = path.join(prod, 'ledger.dat');
  const other = path.join(prod, 'other.dat');
  fs.writeFileSync(held, 'balance 100\n');
  fs.writeFileSync(other, 'free\n');
  const before = await servedNatively();
  const txn = await Transaction.begin('T1', [held]);
  t.equal(await outcome(() => fs.promises.rename(held, path.join(prod, 'moved.dat'))), 'EBUSY', 'a held file cannot be renamed');
  t.equal(await outcome(() => fs.promises.unlink(held)), 'EBUSY', 'nor unlinked');
  fs.renameSync(other, path.join(prod, 'other-2.dat'));
  t.equal(await servedNatively(), before, 'none was served natively while the transaction was open');
  await txn.commit();
  fs.renameSync(held, path.join(prod, 'moved.dat'));
  t.equal(await servedNatively(), before + 1, 'after the commit, renames are served natively again');
  await synced();
  t.same((await snapshot(dr)).entries, (await snapshot(prod)).entries, 'the sites are identical');
});

t.test('a file created natively: a critical one is an event, and its times reach the backup when its writes come back to JavaScript', { skip }, async (t) => {
  const { prod, dr, pstate, synced, servedNatively } = await pair(t);
  const before = await servedNatively();
  fs.writeFileSync(path.join(prod, 'start.cm'), '&begin\n');
  const fh = await fs.promises.open(path.join(prod, 'atm.log'), 'wx');
  await fh.write('captured natively\n');
  t.equal(await servedNatively(), before + 2, 'both creates were served natively');
  // A transaction on another file sends every open file's writes back to JavaScript, this one's too.
  fs.writeFileSync(path.join(prod, 'ledger.dat'), 'balance 1\n');
  const txn = await Transaction.begin('T2', [path.join(prod, 'ledger.dat')]);
  await new Promise((r) => setTimeout(r, 20)); // a later mtime than the captured write's
  await fh.write('served in JavaScript\n');
  await fh.close();
  await txn.commit();
  await synced();
  t.equal(fs.readFileSync(path.join(dr, 'atm.log'), 'utf8'), 'captured natively\nserved in JavaScript\n', 'both writes are on the backup');
  const [p, b] = [await snapshot(prod), await snapshot(dr)];
  t.same(b.entries, p.entries, 'the sites are identical');
  t.same(mtimeDrift(p, b), [], 'with the times of the last write, journaled at the close');
  const status = JSON.parse((await drms(['status', '--state', pstate, '--json'])).stdout) as { events: Array<{ kind: string; path: string; class: string; how: string }> };
  t.match(status.events.filter((e) => e.kind === 'detected'), [{ path: '/start.cm', class: 'macros', how: 'created' }], 'the new command macro is an event; the log file is of no class');
});

t.test('a class that declares a VOS organization at creation: its creates are JavaScript\'s', { skip }, async (t) => {
  const l = layout(t);
  const policy = path.join(l.dir, 'policy.json');
  fs.writeFileSync(policy, JSON.stringify({ classes: { ledgers: { patterns: ['*.ledger'], organization: 'sequential' } } }));
  const backup = await startBackup(t, { target: l.dr, state: l.bstate, secret: l.secret });
  await startPrimary(t, { mount: l.prod, state: l.pstate, to: `127.0.0.1:${backup.port}`, secret: l.secret, extra: ['--policy', policy] });
  fs.writeFileSync(path.join(l.prod, 'day.ledger'), '');
  fs.renameSync(path.join(l.prod, 'day.ledger'), path.join(l.prod, 'today.ledger'));
  const status = JSON.parse((await drms(['status', '--state', l.pstate, '--json'])).stdout) as { namesServedNatively: number };
  t.equal(status.namesServedNatively, 1, 'the rename was served natively, the create was not');
  const rf = await RecordFile.open(path.join(l.prod, 'today.ledger'));
  await rf.close();
  t.equal(rf.format.organization, 'sequential', 'the new file was declared a sequential record file at creation');
});
