// VOS record files through the mount: layouts per organization, the rules the mount enforces, record-level
// journal entries, transactions (commit, abort, crash) applied whole on the backup, and `drms records`.
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { drms, layout, sh, startBackup, startPrimary } from './helpers/cluster.js';
import { snapshot } from './helpers/tree.js';
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
