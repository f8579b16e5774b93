// VOS record files through the mount: layouts per organization, the rules the mount enforces, record-level
// journal entries, transactions (commit, abort, crash) applied whole on the backup, and `drms records`.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setAttribute } from 'fs-xattr';
import { drms, freePort, layout, NATIVE_BINDING, outcome, sh, startBackup, startPrimary } from './helpers/cluster.js';
import { mtimeDrift, snapshot } from './helpers/tree.js';
import { consistentRead, RecordFile, Transaction } from '../dist/vos/record-file.js';
import type { RecordListing } from '../dist/cli/records.js';

async function pair(t: Test, extra: string[] = []) {
  const l = layout(t);
  const backup = await startBackup(t, { target: l.dr, state: l.bstate, secret: l.secret });
  const primary = await startPrimary(t, { mount: l.prod, state: l.pstate, to: `127.0.0.1:${backup.port}`, secret: l.secret, extra });
  const synced = async () => t.equal((await drms(['sync', '--state', l.pstate, '--timeout', '60'])).code, 0, 'the backup has applied everything');
  return { ...l, backup, primary, synced };
}

async function records(file: string): Promise<RecordListing> {
  const r = await drms(['records', '--json', file]);
  return JSON.parse(r.stdout) as RecordListing;
}

/** The listing without the path: what must agree between the sites. */
async function recordsOf(file: string) {
  const { path: _p, ...rest } = await records(file);
  return rest;
}

const rec = (s: string) => Buffer.from(s);

t.test('each organization round-trips through the mount and is mirrored record by record', async (t) => {
  const { dir, prod, dr, synced } = await pair(t);
  const seq = await RecordFile.create(path.join(prod, 'atm.log'), { organization: 'sequential' });
  for (const s of ['withdrawal 100', 'deposit 2500', 'x', 'balance inquiry']) await seq.append(rec(s));
  await seq.write(2, rec('deposit 2600')); // same length: allowed
  t.equal(await seq.count(), 4);
  t.same((await seq.read(2))?.toString(), 'deposit 2600');
  seq.position(3);
  t.same((await seq.next())?.data.toString(), 'x', 'sequential read from a position');
  await seq.close();

  const fixed = await RecordFile.create(path.join(prod, 'cards.table'), { organization: 'fixed', recordSize: 16 });
  for (let i = 1; i <= 5; i++) await fixed.append(rec(`card ${String(i).padStart(11, '0')}`));
  await fixed.write(3, rec('card 00000000333'));
  t.equal(await fixed.count(), 5);
  await fixed.close();

  const rel = await RecordFile.create(path.join(prod, 'accounts.rel'), { organization: 'relative', recordSize: 32 });
  await rel.write(1, rec('alice'));
  await rel.write(4, rec('dave, slot 4')); // slots 2 and 3 stay empty
  await rel.write(2, rec('bob'));
  await rel.delete(2);
  t.equal(await rel.read(2), null, 'a deleted slot reads as deleted');
  t.equal(await rel.read(3), null, 'an empty slot reads as empty');
  t.same((await rel.read(4))?.toString(), 'dave, slot 4');
  await rel.close();

  const stream = await RecordFile.create(path.join(prod, 'notes.txt'), { organization: 'stream' });
  await stream.append(rec('free text'));
  await stream.close();
  await synced();

  for (const name of ['atm.log', 'cards.table', 'accounts.rel']) {
    const [p, b] = [await recordsOf(path.join(prod, name)), await recordsOf(path.join(dr, name))];
    t.same(b, p, `${name}: the backup has the same records`);
    t.notOk(p.damage, `${name} parses whole`);
  }
  const relOnBackup = await RecordFile.open(path.join(dr, 'accounts.rel'), 'r');
  t.equal(await relOnBackup.read(2), null, 'the deleted slot reads as deleted on the backup too');
  t.same((await relOnBackup.info(2))?.state, 'deleted');
  t.same((await relOnBackup.info(3))?.state, 'empty');
  await relOnBackup.close();
  t.same((await records(path.join(prod, 'atm.log'))).records.map((r) => r.text), ['withdrawal 100', 'deposit 2600', 'x', 'balance inquiry']);
  t.same((await snapshot(dr)).entries, (await snapshot(prod)).entries, 'organization and record size are mirrored as xattrs');

  // Ordinary tools still work on record files.
  const out = await sh(`ls ${prod} && cp ${prod}/cards.table ${dir}/cards.copy && cat ${prod}/cards.table`, dir);
  t.match(out, /accounts\.rel/, 'ls lists record files');
  t.match(out, /card 00000000333/, 'cat shows the records');
  t.same(fs.readFileSync(path.join(dir, 'cards.copy')), fs.readFileSync(path.join(dr, 'cards.table')), 'cp copies the bytes');
});

async function pwrite(file: string, data: Buffer, offset: number): Promise<void> {
  const fh = await fs.promises.open(file, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

t.test('the mount refuses writes that break a record organization, with EINVAL and a logged reason', async (t) => {
  const { prod, dr, pstate, primary, synced } = await pair(t);
  const fixedPath = path.join(prod, 'fixed.table');
  const fixed = await RecordFile.create(fixedPath, { organization: 'fixed', recordSize: 8 });
  await fixed.append(rec('AAAAAAAA'));
  await fixed.append(rec('BBBBBBBB'));
  await fixed.close();
  t.equal(await outcome(() => pwrite(fixedPath, rec('CCCC'), 16)), 'EINVAL', 'fixed: a partial record is refused');
  t.equal(await outcome(() => pwrite(fixedPath, rec('CCCCCCCC'), 4)), 'EINVAL', 'fixed: a write across a record boundary is refused');
  t.equal(await outcome(() => pwrite(fixedPath, rec('CCCCCCCC'), 32)), 'EINVAL', 'fixed: a gap past the end is refused');
  t.equal(await outcome(() => fs.promises.truncate(fixedPath, 12)), 'EINVAL', 'fixed: truncate inside a record is refused');
  t.equal(await outcome(() => pwrite(fixedPath, rec('CCCCCCCCDDDDDDDD'), 16)), 'ok', 'fixed: whole records at the end are taken');

  const relPath = path.join(prod, 'slots.rel');
  const rel = await RecordFile.create(relPath, { organization: 'relative', recordSize: 12 });
  await rel.write(1, rec('one'));
  await rel.write(2, rec('two'));
  await rel.delete(1);
  await rel.close();
  t.equal(await outcome(() => pwrite(relPath, rec('torn'), 16)), 'EINVAL', 'relative: a torn slot is refused');
  const badHeader = Buffer.alloc(16);
  badHeader.write('\x01\x52\x00\x40', 'latin1'); // length 64 in a 12-byte slot
  t.equal(await outcome(() => pwrite(relPath, badHeader, 32)), 'EINVAL', 'relative: a slot whose header lies is refused');

  const seqPath = path.join(prod, 'journal.seq');
  const seq = await RecordFile.create(seqPath, { organization: 'sequential' });
  await seq.append(rec('first'));
  await seq.append(rec('second'));
  await seq.close();
  const size = fs.statSync(seqPath).size;
  t.equal(await outcome(() => pwrite(seqPath, rec('garbage'), size)), 'EINVAL', 'sequential: bytes that are not whole records are refused');
  t.equal(await outcome(() => fs.promises.appendFile(seqPath, Buffer.from([0, 9, 1, 2]))), 'EINVAL', 'sequential: a torn record is refused');
  const longer = await outcome(async () => {
    const f = await RecordFile.open(seqPath);
    try {
      await f.write(1, rec('firstX'));
    } finally {
      await f.close();
    }
  });
  t.equal(longer, 'EINVAL', 'sequential: a rewrite cannot change the record length');
  t.equal(await outcome(() => fs.promises.truncate(seqPath, 3)), 'EINVAL', 'sequential: truncate inside a record is refused');

  const plain = path.join(prod, 'plain.dat');
  fs.writeFileSync(plain, 'not records');
  t.equal(await outcome(() => setAttribute(plain, 'user.vos.organization', Buffer.from('fixed'))), 'EINVAL', 'fixed needs a record size first');
  await setAttribute(plain, 'user.vos.record_size', Buffer.from('4'));
  t.equal(await outcome(() => setAttribute(plain, 'user.vos.organization', Buffer.from('fixed'))), 'EINVAL', 'contents that are not whole records cannot be declared fixed');
  t.equal(await outcome(() => setAttribute(plain, 'user.vos.organization', Buffer.from('indexed'))), 'EINVAL', 'an unknown organization is refused');
  t.equal(await outcome(() => setAttribute(plain, 'user.drms.anything', Buffer.from('x'))), 'ENOTSUP', 'the user.drms namespace is reserved');
  await primary.waitFor('operation refused');
  t.ok(primary.logs.some((l) => l.msg === 'operation refused' && l.path === '/fixed.table' && /whole 8-byte records/.test(String(l.reason))), 'refusals are logged with path and reason');

  await synced();
  t.same((await snapshot(dr)).entries, (await snapshot(prod)).entries, 'refused writes changed neither site');
  for (const f of ['fixed.table', 'slots.rel', 'journal.seq']) t.notOk((await records(path.join(dr, f))).damage, `${f} parses whole on the backup`);

});

t.test('the journal records each record operation: file, organization, record number, kind', async (t) => {
  const { prod, pstate, secret } = layout(t);
  // No backup: the entries stay in the journal to be read.
  const primary = await startPrimary(t, { mount: prod, state: pstate, to: '127.0.0.1:9', secret, extra: ['--drain-timeout', '0.5'] });
  const rel = await RecordFile.create(path.join(prod, 'r.rel'), { organization: 'relative', recordSize: 8 });
  await rel.write(1, rec('a'));
  await rel.write(3, rec('c'));
  await rel.write(1, rec('A'));
  await rel.delete(3);
  await rel.close();
  const seq = await RecordFile.create(path.join(prod, 's.seq'), { organization: 'sequential' });
  await seq.append(rec('one'));
  await seq.append(rec('two'));
  await seq.write(1, rec('ONE'));
  await seq.close();
  primary.proc.kill('SIGTERM');
  await primary.exited;

  const { Journal } = await import('../dist/journal/journal.js');
  const { decodeEntry } = await import('../dist/journal/entry.js');
  const j = Journal.open(pstate, { readOnly: true });
  t.teardown(() => j.close());
  const writes = j.read(1, 2 ** 30, 100_000).map((e) => decodeEntry(e.bytes)).filter((e) => e.op === 'write');
  t.same(writes.map((e) => e.op === 'write' && [e.path, e.record?.organization, e.record?.kind, e.record?.recno, e.record?.count]), [
    ['/r.rel', 'relative', 'append', 1, 1],
    ['/r.rel', 'relative', 'append', 3, 1],
    ['/r.rel', 'relative', 'rewrite', 1, 1],
    ['/r.rel', 'relative', 'delete', 3, 1],
    ['/s.seq', 'sequential', 'append', 1, 1],
    ['/s.seq', 'sequential', 'append', 2, 1],
    ['/s.seq', 'sequential', 'rewrite', 1, 1],
  ]);
});

/** Record texts of a file on either site. */
async function texts(file: string): Promise<string[]> {
  const f = await RecordFile.open(file, 'r');
  try {
    return (await f.records()).filter((r) => r.state === 'present').map((r) => r.data.toString());
  } finally {
    await f.close();
  }
}

async function ledgerPair(prod: string) {
  const ledger = await RecordFile.create(path.join(prod, 'ledger.seq'), { organization: 'sequential' });
  const balances = await RecordFile.create(path.join(prod, 'balances.fix'), { organization: 'fixed', recordSize: 12 });
  await ledger.append(rec('opening'));
  await balances.append(rec('acct1:000100'));
  return { ledger, balances };
}

t.test('a committed transaction reaches the backup whole; an aborted one reaches neither site', async (t) => {
  const { prod, dr, primary, synced } = await pair(t);
  const { ledger, balances } = await ledgerPair(prod);
  await synced();

  const txn = await Transaction.begin('T1', [ledger, balances]);
  await ledger.append(rec('debit acct1 40'));
  await ledger.append(rec('credit acct2 40'));
  await balances.write(1, rec('acct1:000060'));
  await synced();
  t.same(await texts(path.join(dr, 'ledger.seq')), ['opening'], 'before the commit the backup has none of the transaction (it is staged)');
  t.same(await texts(path.join(dr, 'balances.fix')), ['acct1:000100']);
  await txn.commit();
  await synced();
  t.same(await texts(path.join(dr, 'ledger.seq')), ['opening', 'debit acct1 40', 'credit acct2 40'], 'after the commit: all three records');
  t.same(await texts(path.join(dr, 'balances.fix')), ['acct1:000060']);
  await primary.waitFor('transaction committed');

  const before = await snapshot(prod);
  const t2 = await Transaction.begin('T2', [ledger, balances]);
  await ledger.append(rec('debit acct1 999'));
  await balances.write(1, rec('acct1:999999'));
  await balances.append(rec('acct9:000001'));
  t.same(await texts(ledger.path), ['opening', 'debit acct1 40', 'credit acct2 40', 'debit acct1 999'], 'the primary sees its own uncommitted records');
  await t2.abort();
  await ledger.close();
  await balances.close();
  await synced();
  const after = await snapshot(prod);
  t.same(after.entries, before.entries, 'the abort restored the primary: bytes, sizes, attributes');
  t.same(mtimeDrift(after, before), [], 'and times');
  const backup = await snapshot(dr);
  t.same(backup.entries, after.entries, 'the backup never applied it');
  t.same(mtimeDrift(backup, after), [], 'times agree on the backup too');
  t.equal(fs.readdirSync(dr).filter((n) => n.includes('drms-commit')).length, 0, 'no commit leftovers on the backup');
});

t.test('a primary killed inside a transaction rolls it back on restart; the backup never applies it', async (t) => {
  const { prod, dr, pstate, secret, backup, primary, synced } = await pair(t);
  const { ledger, balances } = await ledgerPair(prod);
  await ledger.close();
  await balances.close();
  await synced();
  const before = await snapshot(prod);

  await Transaction.begin('T3', [path.join(prod, 'ledger.seq'), path.join(prod, 'balances.fix')]);
  const l = await RecordFile.open(path.join(prod, 'ledger.seq'));
  const b = await RecordFile.open(path.join(prod, 'balances.fix'));
  for (let i = 0; i < 50; i++) await l.append(rec(`half-done ${i}`));
  await b.write(1, rec('acct1:000000'));
  await l.close().catch(() => undefined);
  await b.close().catch(() => undefined);
  primary.proc.kill('SIGKILL');
  await primary.exited;

  const again = await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret });
  await again.waitFor('recovery: rolled back a transaction left open by the previous run');
  await synced();
  const [p, d] = [await snapshot(prod), await snapshot(dr)];
  t.same(p.entries, before.entries, 'the primary is as before the transaction');
  t.same(d.entries, before.entries, 'so is the backup');
});

t.test('a reader on the backup never sees part of a large transaction', async (t) => {
  const { prod, dr, synced } = await pair(t);
  const a = await RecordFile.create(path.join(prod, 'a.seq'), { organization: 'sequential' });
  const b = await RecordFile.create(path.join(prod, 'b.fix'), { organization: 'fixed', recordSize: 16 });
  await synced();
  const rounds = 3;
  const perRound = 400;
  let stop = false;
  const seen = new Set<string>();
  const torn: string[] = [];
  const reader = (async () => {
    while (!stop) {
      const counts = await consistentRead(dr, async () => {
        const c = async (f: string) => (fs.existsSync(f) ? (await texts(f)).length : 0);
        return [await c(path.join(dr, 'a.seq')), await c(path.join(dr, 'b.fix'))] as const;
      }).catch(() => undefined);
      if (!counts) continue;
      seen.add(counts.join('/'));
      if (counts[0] !== counts[1] || counts[0] % perRound !== 0) torn.push(counts.join('/'));
    }
  })();
  for (let r = 0; r < rounds; r++) {
    const txn = await Transaction.begin(`big-${r}`, [a, b]);
    for (let i = 0; i < perRound; i++) {
      await a.append(rec(`round ${r} entry ${i}`));
      await b.append(rec(`r${r} e${String(i).padStart(12, '0')}`.slice(0, 16)));
    }
    await txn.commit();
  }
  await a.close();
  await b.close();
  await synced();
  await new Promise((r) => setTimeout(r, 200));
  stop = true;
  await reader;
  t.same(torn, [], 'every read saw whole transactions in both files');
  t.ok(seen.has(`${rounds * perRound}/${rounds * perRound}`), `the reader saw the final state (states seen: ${[...seen].join(', ')})`);
  t.ok(seen.size >= 2, 'and at least one earlier state: it read while transactions were applied');
});

t.test('fuzz: random valid and invalid record operations and transactions; both sites agree with the model', async (t) => {
  const { prod, dr, primary, synced } = await pair(t);
  let state = Number(process.env.DRMS_FUZZ_SEED ?? Date.now() % 1_000_000);
  t.comment(`seed ${state} (DRMS_FUZZ_SEED to replay)`);
  // The LCG in 32-bit integer arithmetic: as a float product its low bits were lost, and some seeds fell into a
  // short cycle (seed 602456: no invalid operation after step 49).
  const rand = (n: number) => {
    state = (Math.imul(state, 1103515245) + 12345) & 0x7fffffff;
    return Math.floor((state / 2 ** 31) * n);
  };
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => 32 + rand(95)));
  type Slot = { state: 'present' | 'deleted' | 'empty'; data: string };
  const specs = [
    { name: 'fuzz.seq', organization: 'sequential' as const, recordSize: undefined, slot: 0 },
    { name: 'fuzz.fix', organization: 'fixed' as const, recordSize: 24, slot: 24 },
    { name: 'fuzz.rel', organization: 'relative' as const, recordSize: 40, slot: 44 },
  ];
  const files = await Promise.all(specs.map((s) => RecordFile.create(path.join(prod, s.name), s)));
  const model: Slot[][] = specs.map(() => []);
  let refused = 0;
  let txnSaved: Slot[][] | undefined;
  let txn: InstanceType<typeof Transaction> | undefined;
  for (let step = 0; step < 300; step++) {
    const i = rand(3);
    const [f, spec, m] = [files[i]!, specs[i]!, model[i]!];
    const size = fs.statSync(f.path).size;
    const choice = rand(10);
    if (choice === 0 && !txn) {
      txnSaved = model.map((x) => x.map((s) => ({ ...s })));
      txn = await Transaction.begin(`fz${step}`, files);
    } else if (choice === 1 && txn) {
      if (rand(2)) await txn.commit();
      else {
        await txn.abort();
        for (let k = 0; k < 3; k++) model[k] = txnSaved![k]!;
      }
      txn = undefined;
    } else if (choice < 4) {
      // Invalid by construction: each must be refused with EINVAL and change nothing.
      const bad = spec.slot
        ? rand(2) ? () => pwrite(f.path, bytes(spec.slot + 1 + rand(5)), 0) : () => pwrite(f.path, bytes(spec.slot), size + spec.slot * (spec.organization === 'fixed' ? 1 : 0) + 1)
        : rand(2) ? () => pwrite(f.path, Buffer.concat([Buffer.from([0, 3]), bytes(3), Buffer.from([0, 1, 0, 4])]), size) : () => fs.promises.truncate(f.path, Math.max(1, size - 1));
      if (spec.organization === 'sequential' && size === 0) continue;
      t.equal(await outcome(bad), 'EINVAL', `step ${step}: invalid ${spec.organization} write refused`);
      refused++;
    } else if (spec.organization === 'relative') {
      const recno = 1 + rand(30);
      if (rand(4) === 0 && recno <= m.length) {
        await f.delete(recno);
        m[recno - 1] = { state: 'deleted', data: '' };
      } else {
        const data = bytes(rand(41)).toString();
        await f.write(recno, rec(data));
        while (m.length < recno - 1) m.push({ state: 'empty', data: '' });
        m[recno - 1] = { state: 'present', data };
      }
    } else if (m.length && rand(3) === 0) {
      const recno = 1 + rand(m.length);
      const data = bytes(m[recno - 1]!.data.length).toString();
      await f.write(recno, rec(data));
      m[recno - 1] = { state: 'present', data };
    } else {
      const data = bytes(spec.organization === 'fixed' ? 24 : rand(200)).toString();
      await f.append(rec(data));
      m.push({ state: 'present', data });
    }
  }
  if (txn) await txn.commit();
  for (const f of files) await f.close();
  await synced();
  t.ok(refused > 20, `${refused} invalid operations were refused`);
  for (const [i, spec] of specs.entries()) {
    const expected = model[i]!.map((s) => [s.state, s.state === 'present' ? s.data : '']);
    for (const site of [prod, dr]) {
      const l = await records(path.join(site, spec.name));
      t.notOk(l.damage, `${spec.name} on ${site === prod ? 'primary' : 'backup'} parses whole`);
      t.same(l.records.map((r) => [r.state, Buffer.from(r.data, 'base64').toString()]), expected, `${spec.name} on ${site === prod ? 'primary' : 'backup'} matches the model`);
    }
  }
  t.same((await snapshot(dr)).entries, (await snapshot(prod)).entries, 'the trees are identical');
  t.notOk(primary.logs.some((l) => Number(l.level) >= 50), 'no errors logged');
});

t.test('drms records reports a damaged file with the record number and offset', async (t) => {
  const { dir } = layout(t);
  const file = path.join(dir, 'broken.seq');
  const good = Buffer.from([0, 2, 0x68, 0x69, 0, 2]); // "hi"
  fs.writeFileSync(file, Buffer.concat([good, good, Buffer.from([0, 5, 0x61])]));
  await setAttribute(file, 'user.vos.organization', Buffer.from('sequential'));
  const text = await drms(['records', file]);
  t.equal(text.code, 1, 'exit 1 for a damaged file');
  t.match(text.stdout, /DAMAGED: record 3 at offset 12: torn record/);
  const json = JSON.parse((await drms(['records', '--json', file])).stdout) as RecordListing;
  t.same(json.damage && [json.damage.recno, json.damage.offset], [3, 12]);
  t.equal(json.records.length, 2, 'the whole records before the damage are listed');
  const plain = path.join(dir, 'plain');
  fs.writeFileSync(plain, 'x');
  const notRecords = await drms(['records', plain]);
  t.equal(notRecords.code, 2);
  t.match(notRecords.stderr, /is not a record file/);
});

t.test('with the writeback cache a record file bypasses the cache: its records reach the backup as written', { skip: NATIVE_BINDING ? false : 'the fuse-native binding has no writeback cache' }, async (t) => {
  const { prod, dr, synced } = await pair(t, ['--writeback-cache']);
  const log = path.join(prod, 'atm.log');
  const made = await RecordFile.create(log, { organization: 'sequential' });
  await made.close();
  // Another process holds a record file and a plain file open, written but neither flushed nor closed.
  const child = spawn(process.execPath, ['--input-type=module', '-e', `
    import fs from 'node:fs';
    const { RecordFile } = await import(${JSON.stringify(path.resolve(import.meta.dirname, '../dist/vos/record-file.js'))});
    const rec = await RecordFile.open(process.argv[1]);
    for (const r of ['withdrawal 100', 'deposit 2500']) await rec.append(Buffer.from(r));
    const plain = fs.openSync(process.argv[2], 'w');
    fs.writeSync(plain, 'buffered\\n');
    process.stdout.write('written\\n');
    process.stdin.on('end', async () => { await rec.close(); fs.closeSync(plain); process.stdout.write('closed\\n'); }).resume();
  `, log, path.join(prod, 'plain.txt')], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => void child.kill());
  const said = (what: string) => new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => d.toString().includes(what) && resolve());
    child.once('exit', (code) => reject(new Error(`writer exited (${code}) before "${what}"`)));
  });
  await said('written');
  await synced();
  t.same((await recordsOf(path.join(dr, 'atm.log'))).records.map((r) => r.text), ['withdrawal 100', 'deposit 2500'], 'both records on the backup while the file is still open');
  t.not(fs.readFileSync(path.join(dr, 'plain.txt'), 'utf8'), 'buffered\n', 'a plain file\'s write is still in the cache');
  child.stdin!.end();
  await said('closed');
  await synced();
  t.equal(fs.readFileSync(path.join(dr, 'plain.txt'), 'utf8'), 'buffered\n', 'and reaches the backup at its close');
  t.same(await recordsOf(path.join(dr, 'atm.log')), await recordsOf(log), 'the record file is the same on both sites');
});

t.test('after an abort, a file read again through the mount is its before-image, not the pages cached meanwhile', async (t) => {
  const { prod, dr, synced } = await pair(t);
  await sh('printf "before\\n" > balances.table && cat balances.table', prod); // its pages cached, kept across opens
  const txn = await Transaction.begin('T-cache', [path.join(prod, 'balances.table')]);
  // The same length: only the pages tell the two apart.
  t.equal(await sh('printf "after!\\n" | dd of=balances.table conv=notrunc status=none && cat balances.table', prod), 'after!\n', 'the transaction\'s write is read back');
  await txn.abort();
  t.equal(await sh('cat balances.table', prod), 'before\n', 'the before-image is read after the abort');
  await synced();
  t.equal(fs.readFileSync(path.join(dr, 'balances.table'), 'utf8'), 'before\n', 'and is on the backup');
});

t.test('the initial copy and verify take a file in an open transaction as the transaction found it', async (t) => {
  const l = layout(t);
  // Two files before the primary starts, so the initial copy copies both; the larger takes several of its steps.
  const original = { big: Buffer.alloc(2.5 * 2 ** 20 + 77), small: Buffer.from('small file, kept whole\n') };
  for (let i = 0; i < original.big.length; i++) original.big[i] = (i * 31 + (i >> 12)) & 0xff;
  const big = path.join(l.prod, 'accounts.table');
  const small = path.join(l.prod, 'notes.txt');
  fs.writeFileSync(big, original.big);
  fs.writeFileSync(small, original.small);
  const mtimeNs = (root: string) => ['accounts.table', 'notes.txt'].map((n) => fs.statSync(path.join(root, n), { bigint: true }).mtimeNs);
  const before = mtimeNs(l.prod);
  // No backup yet: the copy waits for it while the transactions change both files.
  const port = await freePort();
  const primary = await startPrimary(t, { mount: l.prod, state: l.pstate, to: `127.0.0.1:${port}`, secret: l.secret });
  const kept = await Transaction.begin('T-kept', [big]);
  const gone = await Transaction.begin('T-gone', [small]);
  await sh(`printf 'TXN-WRITE' | dd of=accounts.table bs=1 seek=${1.5 * 2 ** 20} conv=notrunc status=none
    head -c 100000 /dev/zero | tr '\\0' 'x' >> accounts.table
    truncate -s 5 notes.txt && printf 'rewritten by the transaction' >> notes.txt`, l.prod);
  await startBackup(t, { target: l.dr, state: l.bstate, secret: l.secret, port });
  await primary.waitFor('initial copy done');
  t.ok(fs.readFileSync(path.join(l.dr, 'accounts.table')).equals(original.big), 'the backup has the large file as its transaction found it');
  t.ok(fs.readFileSync(path.join(l.dr, 'notes.txt')).equals(original.small), 'and the small one');
  t.same(mtimeNs(l.dr), before, 'with their times from before the transactions');
  t.ok(fs.readFileSync(big).length > original.big.length, 'while the primary has the uncommitted changes');
  const verified = await drms(['verify', '--state', l.pstate]);
  t.equal(verified.code, 0, `verify finds the sites identical while the transactions are open: ${verified.stdout}${verified.stderr}`);

  await kept.commit();
  await gone.abort();
  t.equal(await sh('cat notes.txt', l.prod), original.small.toString(), 'the abort restored the primary');
  t.equal((await drms(['sync', '--state', l.pstate, '--timeout', '60'])).code, 0, 'the backup has applied everything');
  const [p, b] = [await snapshot(l.prod), await snapshot(l.dr)];
  t.same(b.entries, p.entries, 'the backup has the committed file and the restored one');
  t.same(mtimeDrift(b, p), [], 'times agree');
  t.equal(fs.readFileSync(path.join(l.dr, 'accounts.table')).subarray(1.5 * 2 ** 20, 1.5 * 2 ** 20 + 9).toString(), 'TXN-WRITE', 'the committed write is there');
});
