// End to end: a real primary mounted over a directory with files in it, a real backup, a workload from another process.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { drms, isMounted, layout, NATIVE_BINDING, sh, startBackup, startPrimary, tmpdir, writeSecret } from './helpers/cluster.js';
import { mtimeDrift, snapshot } from './helpers/tree.js';
import { FULL_WORKLOAD } from './helpers/workload.js';

t.test('mirrors pre-existing files and every operation, identical after drms sync', async (t) => {
  const dir = tmpdir(t);
  const prod = path.join(dir, 'prod');
  const dr = path.join(dir, 'dr');
  fs.mkdirSync(path.join(prod, 'pre/nested'), { recursive: true });
  fs.writeFileSync(path.join(prod, 'pre/config.table'), 'key=value\n');
  fs.writeFileSync(path.join(prod, 'pre/remove-me.txt'), 'soon gone\n');
  fs.writeFileSync(path.join(prod, 'pre/nested/start.cm'), '&begin\n');
  fs.linkSync(path.join(prod, 'pre/config.table'), path.join(prod, 'pre/nested/config-link'));
  fs.symlinkSync('config.table', path.join(prod, 'pre/cfg'));
  fs.chmodSync(path.join(prod, 'pre/nested/start.cm'), 0o750);
  fs.utimesSync(path.join(prod, 'pre/config.table'), new Date('2020-05-05T05:05:05Z'), new Date('2020-05-05T05:05:05Z'));
  const secret = writeSecret(dir);
  const backup = await startBackup(t, { target: dr, state: path.join(dir, 'bstate'), secret });
  const primary = await startPrimary(t, { mount: prod, state: path.join(dir, 'pstate'), to: `127.0.0.1:${backup.port}`, secret });
  t.ok(isMounted(prod), 'mounted over the production directory itself');

  const before = await drms(['sync', '--state', path.join(dir, 'pstate'), '--timeout', '30']);
  t.equal(before.code, 0, before.stderr);
  t.same((await snapshot(dr)).entries, (await snapshot(prod)).entries, 'pre-existing tree copied at first start');

  await sh(FULL_WORKLOAD, prod);
  const synced = await drms(['sync', '--state', path.join(dir, 'pstate'), '--timeout', '30']);
  t.equal(synced.code, 0, synced.stderr);
  t.match(synced.stdout, /backup has applied seq \d+/);

  const [p, b] = [await snapshot(prod), await snapshot(dr)];
  t.same(b.entries, p.entries, 'content, mode, owner, size, symlinks, xattrs and mtimes (to the second) match');
  t.same(b.linkGroups, p.linkGroups, 'hard-link groups match');
  t.same(mtimeDrift(p, b), [], 'mtimes match to the microsecond');
  t.equal(p.entries['/logs/atm.log']!.mtimeSec, Date.UTC(2001, 1, 3, 4, 5, 6) / 1000, 'touch -m -d reached the file');
  t.equal(b.entries['/data/blob.bin']!.uid, 1234);
  t.equal(fs.readFileSync(path.join(dr, 'logs/atm.log'), 'utf8').split('\n').filter(Boolean).length, 200);

  const status = await drms(['status', '--state', path.join(dir, 'pstate'), '--json']);
  const s = JSON.parse(status.stdout);
  t.equal(s.role, 'primary');
  t.equal(s.connected, true);
  t.equal(s.lagOps, 0);
  t.equal(s.appliedSeq, s.lastSeq);
  t.ok(s.lastSeq > 250, `journal holds the workload (${s.lastSeq} ops)`);
  const bstatus = JSON.parse((await drms(['status', '--state', path.join(dir, 'bstate'), '--json'])).stdout);
  t.equal(bstatus.role, 'backup');
  t.equal(bstatus.appliedSeq, s.lastSeq);
  t.equal(bstatus.connected, true);

  // SIGTERM: unmount cleanly, exit 0, files stay in place and still match the backup.
  primary.proc.kill('SIGTERM');
  t.equal(await primary.exited, 0, 'primary exits 0 on SIGTERM');
  t.notOk(isMounted(prod), 'no mount left behind');
  const under = await snapshot(prod);
  t.same(under.entries, b.entries, 'the real files under the mount are intact and identical to the backup');
  t.same(mtimeDrift(under, b), []);
});

t.test('with the writeback cache (native binding) the same workload mirrors identically', { skip: NATIVE_BINDING ? false : 'the fuse-native binding has no writeback cache' }, async (t) => {
  const dir = tmpdir(t);
  const [prod, dr, pstate] = [path.join(dir, 'prod'), path.join(dir, 'dr'), path.join(dir, 'pstate')];
  fs.mkdirSync(prod);
  const secret = writeSecret(dir);
  const backup = await startBackup(t, { target: dr, state: path.join(dir, 'bstate'), secret });
  await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret, extra: ['--writeback-cache'] });
  await sh(FULL_WORKLOAD, prod);
  // Small writes the kernel gathers: a record log written 100 bytes at a time, then read back through the mount.
  await sh('for i in $(seq 1 500); do printf "%099d\\n" "$i"; done > small.log && sync small.log && wc -c < small.log', prod);
  const synced = await drms(['sync', '--state', pstate, '--timeout', '30']);
  t.equal(synced.code, 0, synced.stderr);
  const [p, b] = [await snapshot(prod), await snapshot(dr)];
  t.equal(p.entries['/small.log']!.size, 50_000, 'every small write reached the file');
  t.same(b.entries, p.entries, 'content, mode, owner, size, symlinks, xattrs and mtimes match');
  t.same(b.linkGroups, p.linkGroups, 'hard-link groups match');
  t.same(mtimeDrift(p, b), [], 'mtimes match to the microsecond', {
    todo: 'with the writeback cache the kernel keeps mtime itself and writes pages back after the times were journaled: a few microseconds apart',
  });
});

t.test('with the writeback cache a file of one name has its attributes cached for a second; two names or a set-ID bit, not', { skip: NATIVE_BINDING ? false : 'the fuse-native binding has no writeback cache' }, async (t) => {
  const l = layout(t);
  for (const f of ['one.dat', 'two.dat', 'suid.dat']) fs.writeFileSync(path.join(l.prod, f), 'ten bytes\n', { mode: 0o644 });
  fs.linkSync(path.join(l.prod, 'two.dat'), path.join(l.prod, 'two-link.dat'));
  fs.chmodSync(path.join(l.prod, 'suid.dat'), 0o4755);
  // The directory under the mount, opened before mounting: a change made there bypasses drms and the kernel's cache.
  const under = fs.openSync(l.prod, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  t.teardown(() => fs.closeSync(under));
  const backup = await startBackup(t, { target: l.dr, state: l.bstate, secret: l.secret });
  await startPrimary(t, { mount: l.prod, state: l.pstate, to: `127.0.0.1:${backup.port}`, secret: l.secret, extra: ['--writeback-cache'] });
  const modes = async () => (await sh('stat -c %a one.dat two.dat suid.dat', l.prod)).split('\n').slice(0, 3);
  t.same(await modes(), ['644', '644', '4755'], 'modes through the mount');
  for (const [f, m] of [['one.dat', 0o600], ['two.dat', 0o600], ['suid.dat', 0o755]] as const) fs.chmodSync(`/proc/self/fd/${under}/${f}`, m);
  t.same(await modes(), ['644', '600', '755'], 'a change behind the mount shows at once for two names or a set-ID bit; one name is cached');
  await new Promise((r) => setTimeout(r, 1200));
  t.same(await modes(), ['600', '600', '755'], 'and a second later for one name');
  // Changes through the mount renew the cache: never stale.
  await sh('chmod 640 one.dat && truncate -s 3 one.dat', l.prod);
  t.same((await sh('stat -c "%a %s" one.dat', l.prod)).trim(), '640 3', 'a chmod and a truncate through the mount show at once');
});

t.test('a file\'s pages stay cached across opens; a change made beneath the mount is not seen through them', { skip: NATIVE_BINDING ? false : 'fuse-native drops the pages at every open' }, async (t) => {
  const l = layout(t);
  fs.writeFileSync(path.join(l.prod, 'config.table'), 'limit=100\n');
  const under = fs.openSync(l.prod, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  t.teardown(() => fs.closeSync(under));
  const backup = await startBackup(t, { target: l.dr, state: l.bstate, secret: l.secret });
  await startPrimary(t, { mount: l.prod, state: l.pstate, to: `127.0.0.1:${backup.port}`, secret: l.secret });
  t.equal(await sh('cat config.table', l.prod), 'limit=100\n', 'read through the mount, its pages cached');
  // Beneath the mount, the same length: nothing in production does this (every change comes through the mount).
  const fd = fs.openSync(`/proc/self/fd/${under}/config.table`, 'r+');
  fs.writeSync(fd, 'limit=999\n', 0);
  fs.closeSync(fd);
  t.equal(await sh('cat config.table', l.prod), 'limit=100\n', 'opened again, it is read from the cached pages (the kernel would drop them at every open)');
  await sh('printf "limit=250\\n" > config.table', l.prod);
  t.equal(await sh('cat config.table', l.prod), 'limit=250\n', 'a write through the mount is read back at once');
});

t.test('two processes creating the same names at once: every open succeeds, both writes land, the sites match', async (t) => {
  const l = layout(t);
  fs.mkdirSync(path.join(l.prod, 'race'));
  const backup = await startBackup(t, { target: l.dr, state: l.bstate, secret: l.secret });
  await startPrimary(t, { mount: l.prod, state: l.pstate, to: `127.0.0.1:${backup.port}`, secret: l.secret });
  // Both walk the same names in step: each open creates the file or opens the one the other has just made (O_CREAT
  // without O_EXCL or O_TRUNC), and must keep the other's bytes. Each writes 8 bytes of its own at an offset of its own.
  const creator = (id: number) => `node -e '
    const fs = require("fs");
    for (let i = 0; i < 400; i++) {
      const fd = fs.openSync("race/f" + i, fs.constants.O_CREAT | fs.constants.O_WRONLY, 0o644);
      fs.writeSync(fd, "writer-${id}", ${id * 8});
      fs.closeSync(fd);
    }'`;
  await sh(`${creator(0)} & a=$!; ${creator(1)} & b=$!; wait $a; wait $b`, l.prod);
  const names = fs.readdirSync(path.join(l.prod, 'race'));
  t.equal(names.length, 400, 'every name exists once');
  const whole = names.filter((n) => fs.readFileSync(path.join(l.prod, 'race', n), 'utf8') === 'writer-0writer-1');
  t.equal(whole.length, 400, 'every file holds both writers\' bytes');
  const synced = await drms(['sync', '--state', l.pstate, '--timeout', '30']);
  t.equal(synced.code, 0, synced.stderr);
  t.same((await snapshot(l.dr)).entries, (await snapshot(l.prod)).entries, 'the backup holds the same files, bytes and times');
});

t.test('large writes and small ones over the same bytes, from three processes at once: the backup holds the same bytes', async (t) => {
  const l = layout(t);
  const backup = await startBackup(t, { target: l.dr, state: l.bstate, secret: l.secret });
  await startPrimary(t, { mount: l.prod, state: l.pstate, to: `127.0.0.1:${backup.port}`, secret: l.secret });
  // The native binding hands a frame of 64 KiB or more to JavaScript in a buffer of its own, the small ones between
  // gathered in another: both writers' entries must reach the backup in the order they landed.
  const writer = (size: number, count: number, stride: number) => `node -e '
    const fs = require("fs");
    const fd = fs.openSync("shared.dat", fs.constants.O_CREAT | fs.constants.O_WRONLY, 0o644);
    for (let i = 0; i < ${count}; i++) fs.writeSync(fd, Buffer.alloc(${size}, 33 + (i % 90)), 0, ${size}, (i * ${stride}) % (2 << 20));
    fs.closeSync(fd);'`;
  await sh(`${writer(192 * 1024, 120, 77_777)} & a=$!; ${writer(100, 6000, 4_099)} & b=$!; ${writer(64 * 1024, 200, 12_345)} & c=$!; wait $a; wait $b; wait $c`, l.prod);
  const synced = await drms(['sync', '--state', l.pstate, '--timeout', '30']);
  t.equal(synced.code, 0, synced.stderr);
  const [p, b] = [fs.readFileSync(path.join(l.prod, 'shared.dat')), fs.readFileSync(path.join(l.dr, 'shared.dat'))];
  t.ok(p.length > 2 << 20, 'the file holds every writer\'s bytes');
  t.ok(b.equals(p), 'the backup\'s file is byte for byte the primary\'s');
});

t.test('a primary keeps no descriptor of a closed file: 2,000 opens and closes leave its count as it was', async (t) => {
  const l = layout(t);
  const backup = await startBackup(t, { target: l.dr, state: l.bstate, secret: l.secret });
  const primary = await startPrimary(t, { mount: l.prod, state: l.pstate, to: `127.0.0.1:${backup.port}`, secret: l.secret });
  const sync = async () => t.equal((await drms(['sync', '--state', l.pstate, '--timeout', '30'])).code, 0, 'drms sync');
  await sync();
  const open = () => fs.readdirSync(`/proc/${primary.proc.pid}/fd`).length;
  const before = open();
  // Creates, opens for reading, O_TRUNC rewrites and appends: each close's release reaches the primary after
  // close(2) has returned, and must close the descriptor it opened.
  await sh(`node -e '
    const fs = require("fs");
    for (let i = 0; i < 500; i++) {
      fs.writeFileSync("f" + i, "new " + i);
      fs.readFileSync("f" + i);
      fs.writeFileSync("f" + i, "rewritten " + i);
      fs.appendFileSync("f" + i, "!");
    }'`, l.prod);
  await sync();
  let after = open();
  for (let i = 0; i < 50 && after > before + 16; i++) {
    await new Promise((r) => setTimeout(r, 100));
    after = open();
  }
  t.ok(after <= before + 16, `descriptors open in the primary: ${before} before, ${after} after`);
  t.same((await snapshot(l.dr)).entries, (await snapshot(l.prod)).entries, 'the backup holds the same files');
});
