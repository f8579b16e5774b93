// The initial copy runs beside production: the mount serves at once, live writes during the copy end up on the
// backup, a backup that already holds an older copy gets only the blocks that differ, and verify finds and
// repairs drift made behind drms's back.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { drms, layout, sh, startBackup, startPrimary, type Node } from './helpers/cluster.js';
import { snapshot } from './helpers/tree.js';

const SMALL_FILES = 19_990;
const BIG_FILES = 10;
const BIG_SIZE = 96 * 2 ** 20;

/** 20,000 files, 1 GB: small files in 100 directories and ten big ones. */
function buildTree(root: string): number {
  let bytes = 0;
  for (let d = 0; d < 100; d++) fs.mkdirSync(path.join(root, `d${d}`, 'sub'), { recursive: true });
  const small = randomBytes(4096);
  for (let i = 0; i < SMALL_FILES; i++) {
    const n = 200 + (i % 3000);
    fs.writeFileSync(path.join(root, `d${i % 100}`, i % 2 ? 'sub' : '', `f${i}.dat`), small.subarray(0, n));
    bytes += n;
  }
  const big = randomBytes(BIG_SIZE);
  for (let i = 0; i < BIG_FILES; i++) {
    big.writeUInt32BE(i, 0);
    fs.writeFileSync(path.join(root, `big${i}.bin`), big);
    bytes += BIG_SIZE;
  }
  return bytes;
}

async function status(state: string): Promise<Record<string, any>> {
  return JSON.parse((await drms(['status', '--state', state, '--json'])).stdout);
}

/** While the initial copy runs: appends, overwrites in big files, new files, renames and deletes, from a child. */
const LIVE_WRITER = `
  for i in $(seq 1 40); do
    echo "live $i" >> d1/f1.dat
    printf 'OVERWRITE%04d' $i | dd of=big$((i % 10)).bin bs=1 seek=$(( (i * 7919 * 1024) % 90000000 )) conv=notrunc status=none
    printf 'new %d\\n' $i > d2/new$i.dat
    if [ $((i % 4)) = 0 ]; then mv d4/f$((i * 100 + 4)).dat d6/moved$i.dat; fi
    if [ $((i % 5)) = 0 ]; then rm d5/sub/f$((i * 100 + 5)).dat; fi
    sleep 0.05
  done
  truncate -s 50000000 big9.bin
  echo done
`;

t.test('a 20,000-file, 1 GB tree: mount usable at once, live writes during the copy, verify identical; a second primary sends only what differs', async (t) => {
  const { prod, dr, pstate, bstate, secret, dir } = layout(t);
  const bytes = buildTree(prod);
  t.ok(bytes > 1e9, `tree of ${SMALL_FILES + BIG_FILES} files, ${(bytes / 1e9).toFixed(2)} GB`);
  const backup = await startBackup(t, { target: dr, state: bstate, secret });
  const t0 = Date.now();
  const primary = await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret });
  // A child process uses the mount (read, write, list) while the copy has barely started.
  await sh('cat d0/f0.dat > /dev/null && echo first > first-write.txt && ls d7 > /dev/null', prod);
  const usableMs = Date.now() - t0;
  const early = await status(pstate);
  t.not(early.baseline?.phase, 'done', `the mount served reads and writes ${usableMs} ms after start, while the initial copy was ${early.baseline?.phase}`);
  t.comment(`mount usable ${usableMs} ms after the primary started (initial copy: ${JSON.stringify(early.baseline)})`);

  t.equal((await sh(LIVE_WRITER, prod)).trim(), 'done');
  const synced = await drms(['sync', '--state', pstate, '--timeout', '300'], 320_000);
  t.equal(synced.code, 0, synced.stdout + synced.stderr);
  const s = await status(pstate);
  t.equal(s.baseline.phase, 'done');
  t.equal(s.baseline.files, s.baseline.filesTotal, 'progress counted every file it had found');
  t.ok(s.baseline.filesTotal >= SMALL_FILES + BIG_FILES, `${s.baseline.filesTotal} files found`);
  t.ok(s.baseline.bytesTotal > 1e9, 'progress knew the total bytes');
  t.comment(`initial copy: ${JSON.stringify(s.baseline)}`);

  const v = await drms(['verify', '--state', pstate, '--json'], 300_000);
  t.equal(v.code, 0, `verify reports identical: ${v.stdout.slice(0, 2000)}${v.stderr}`);
  const report = JSON.parse(v.stdout);
  t.ok(report.entries > 20_000, `verify compared ${report.entries} entries`);
  const [p, b] = [await snapshot(prod), await snapshot(dr)];
  t.same(b.entries, p.entries, 'the trees are identical (contents, modes, owners, xattrs, mtimes)');
  t.equal(fs.statSync(path.join(dr, 'big9.bin')).size, 50_000_000);

  // A new primary (fresh journal) over a tree the backup already holds an older copy of: a few changes, so the
  // copy sends only the blocks that differ.
  primary.proc.kill('SIGTERM');
  t.equal(await primary.exited, 0);
  fs.writeFileSync(path.join(prod, 'd9/f9.dat'), 'changed while drms was down\n');
  const fd = fs.openSync(path.join(prod, 'big3.bin'), 'r+');
  fs.writeSync(fd, Buffer.from('a change in the middle of a big file'), 0, 36, 40 * 2 ** 20);
  fs.closeSync(fd);
  fs.rmSync(path.join(prod, 'd8/sub/f9.dat'), { force: true });
  fs.rmSync(path.join(prod, 'd8/f8.dat'));
  const pstate2 = path.join(dir, 'pstate2');
  const second: Node = await startPrimary(t, { mount: prod, state: pstate2, to: `127.0.0.1:${backup.port}`, secret });
  const again = await drms(['sync', '--state', pstate2, '--timeout', '300'], 320_000);
  t.equal(again.code, 0, again.stdout + again.stderr);
  const s2 = await status(pstate2);
  t.ok(s2.baseline.bytesSent < 2 * 2 ** 20, `second initial copy sent ${s2.baseline.bytesSent} bytes of ${s2.baseline.bytesTotal} (only differing blocks)`);
  t.same((await snapshot(dr)).entries, (await snapshot(prod)).entries, 'identical again, the deleted file gone from the backup');
  second.proc.kill('SIGTERM');
  t.equal(await second.exited, 0);
});

t.test('drift made behind drms on the backup: verify finds each difference, --repair fixes them, a second verify is clean', async (t) => {
  const { prod, dr, pstate, bstate, secret } = layout(t);
  fs.mkdirSync(path.join(prod, 'tables'));
  for (let i = 0; i < 50; i++) fs.writeFileSync(path.join(prod, 'tables', `t${i}.table`), `rate ${i}\n`.repeat(100));
  fs.writeFileSync(path.join(prod, 'start.cm'), '&echo start\n');
  const backup = await startBackup(t, { target: dr, state: bstate, secret });
  await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret });
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0);
  const clean = await drms(['verify', '--state', pstate]);
  t.equal(clean.code, 0, clean.stdout + clean.stderr);
  t.match(clean.stdout, /^identical \(53 entries/);

  // Behind drms's back: same-size byte change with the old mtime kept, a deletion, an addition, a chmod.
  const changed = path.join(dr, 'tables/t7.table');
  const st = fs.statSync(changed, { bigint: true });
  const fd = fs.openSync(changed, 'r+');
  fs.writeSync(fd, 'RATE', 0);
  fs.closeSync(fd);
  const seconds = (ns: bigint) => Number(ns / 1000n) / 1e6 + 5e-7;
  fs.utimesSync(changed, seconds(st.atimeNs), seconds(st.mtimeNs));
  fs.rmSync(path.join(dr, 'tables/t8.table'));
  fs.writeFileSync(path.join(dr, 'tables/intruder.table'), 'not on the primary\n');
  fs.chmodSync(path.join(dr, 'start.cm'), 0o777);

  const found = await drms(['verify', '--state', pstate, '--json']);
  t.equal(found.code, 1, 'exit 1: drift found');
  const r = JSON.parse(found.stdout);
  t.same(r.differences, [
    { path: '/start.cm', kinds: ['mode'] },
    { path: '/tables/intruder.table', kinds: ['extra'] },
    { path: '/tables/t7.table', kinds: ['content'] },
    { path: '/tables/t8.table', kinds: ['missing'] },
  ], 'each difference with its path and kind');
  const text = await drms(['verify', '--state', pstate]);
  t.match(text.stdout, /DRIFT: 4 difference\(s\)[\s\S]*content\s+\/tables\/t7\.table/, 'the text report lists them');

  const repaired = await drms(['verify', '--state', pstate, '--repair']);
  t.equal(repaired.code, 1, 'repair run still reports the drift it found');
  t.match(repaired.stdout, /4 repaired/);
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0);
  const after = await drms(['verify', '--state', pstate]);
  t.equal(after.code, 0, `second verify clean: ${after.stdout}`);
  t.same((await snapshot(dr)).entries, (await snapshot(prod)).entries, 'the backup matches the primary again');
  const s = await status(pstate);
  t.equal(s.lastVerify.identical, true, 'status shows the last verify');
  t.ok(s.eventCounts.drift >= 2, 'drift was an event');
});

t.test('a scheduled verify reports in status; drms verify without a running primary, or with the backup down, says why (exit 2)', async (t) => {
  const { prod, dr, pstate, bstate, secret } = layout(t);
  const none = await drms(['verify', '--state', pstate]);
  t.equal(none.code, 2);
  t.match(none.stderr, /no drms primary is running/);
  fs.writeFileSync(path.join(prod, 'daily.cm'), '&echo daily\n');
  const backup = await startBackup(t, { target: dr, state: bstate, secret });
  const primary = await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret, extra: ['--verify-every', '1s'] });
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0);
  const scheduled = await primary.waitFor(/^verify: primary and backup are identical/, 15_000);
  t.match(scheduled, { event: 'verify', differences: 0 }, 'the scheduled verify ran on its own');
  t.match((await status(pstate)).lastVerify, { identical: true, differenceCount: 0 }, 'its result is in status');
  backup.proc.kill('SIGKILL');
  await backup.exited;
  const down = await drms(['verify', '--state', pstate]);
  t.equal(down.code, 2);
  t.match(down.stderr, /the backup is not connected/);
});
