// `npm run bench` keeps working: a quick run (short runs, two rounds) writes a report with every target and workload.
// Speed is judged by the full benchmark, never here.
import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { tmpdir } from './helpers/cluster.js';

const run = promisify(execFile);
const BENCH = path.resolve(import.meta.dirname, '../dist/bench/run.js');

t.test('a quick benchmark run measures every workload on ext4, bindfs and drms, and cleans up', async (t) => {
  const out = tmpdir(t, 'bench');
  const { stdout, stderr } = await run(process.execPath, [BENCH, '--quick', '--rounds', '2', '--out', out], { timeout: 240_000, maxBuffer: 16 * 2 ** 20 });
  const json = fs.readdirSync(out).find((f) => f.endsWith('.json'));
  t.ok(json, 'a JSON report is written');
  const report = JSON.parse(fs.readFileSync(path.join(out, json!), 'utf8'));
  t.equal(report.cases.length, 8, 'eight workloads');
  for (const c of report.cases) {
    t.same(Object.keys(c.median).sort(), ['bindfs', 'drms-async', 'drms-async-devfuse', 'drms-async-fuse-native', 'drms-async-wb', 'drms-sync', 'ext4'], `${c.name}: every target measured`);
    t.ok(Object.values(c.median).every((v) => typeof v === 'number' && v > 0), `${c.name}: positive figures`);
    t.equal(c.ratioToExt4.ext4, 1);
  }
  t.ok(report.cases[0].lagMs['drms-async'], 'replication lag sampled under the transaction workload');
  t.ok(report.cases[0].durableLagMs['drms-async'], 'and how far the backup\'s durable acknowledgements trail');
  // The whole machine's CPU while the workers ran: where a target is missed, whether the cores were the limit.
  for (const c of report.cases) {
    const m = c.machine as Record<string, { busy: number; cpuUsPerOp: number }>;
    t.same(Object.keys(m).sort(), Object.keys(c.median).sort(), `${c.name}: the machine's CPU measured for every target`);
    t.ok(Object.values(m).every((u) => u.busy > 0 && u.busy <= 1 && u.cpuUsPerOp > 0), `${c.name}: a busy share and CPU per operation`);
  }
  // The drms processes' CPU by thread: the threads' parts fit in the processes' CPU seconds (the rest is threads that
  // ended, counted as other; within a tick of /proc's accounting for each thread read, and 3 more), and the FUSE
  // threads are told apart by the names native/ gives them (fuse-native's libfuse threads are not ours: none there).
  for (const c of report.cases) {
    const split = c.cpuUsPerOp as Record<string, { primary: Record<string, number>; backup?: Record<string, number> }>;
    t.same(Object.keys(split).sort(), Object.keys(c.median).filter((n) => n.startsWith('drms-')).sort(), `${c.name}: the CPU split measured for every drms target`);
    for (const [name, s] of Object.entries(split)) {
      type Parts = { js: number; fuse: number; other: number; threads: number };
      const runs = c.runs[name] as Array<{ ops: number; cpuSeconds: number; cpuParts: { primary: Parts; backup?: Parts } }>;
      for (const run of runs) {
        const parts = [run.cpuParts.primary, run.cpuParts.backup!];
        const sum = parts.reduce((n, p) => n + p.js + p.fuse + p.other, 0);
        const ticks = 3 + parts.reduce((n, p) => n + p.threads, 0);
        t.ok(Math.abs(sum - run.cpuSeconds) <= ticks / 100, `${c.name} ${name}: a run's parts add up to the processes' CPU seconds (${sum.toFixed(2)} against ${run.cpuSeconds.toFixed(2)})`);
      }
      // Reported per operation: each part's median over the rounds (two here: their mean).
      const perOp = runs.map((r) => (r.cpuParts.primary.js / r.ops) * 1e6);
      t.ok(Math.abs(s.primary.js - perOp.reduce((a, b) => a + b, 0) / perOp.length) < 1e-6, `${c.name} ${name}: the primary's JavaScript µs per operation, the rounds' median`);
      t.ok([s.primary, s.backup!].every((p) => p.js >= 0 && p.fuse >= 0 && p.other >= 0), `${c.name} ${name}: no negative part`);
    }
  }
  const txn1 = report.cases[0].cpuUsPerOp;
  t.ok(txn1['drms-async'].primary.fuse > 0 && txn1['drms-async'].primary.js > 0 && txn1['drms-async'].backup.js > 0, 'the native binding\'s FUSE threads and both JavaScript threads are busy with one writer');
  t.equal(txn1['drms-async-fuse-native'].primary.fuse, 0, 'fuse-native\'s threads count as other');
  t.equal(txn1['drms-async'].backup.fuse, 0, 'the backup serves no mount');
  t.match(stdout, /Where the drms processes' CPU goes[^\n]*\n\n\| workload \| drms-async \|[^\n]*\n[^\n]*\n\| txn-1 \| [\d.]+ \/ [\d.]+ \/ [\d.]+; [\d.]+ \/ [\d.]+ \|/, 'and reported');
  t.match(stdout, /The whole machine while the workers ran[^\n]*\n\n\| workload \| ext4 \| bindfs \| drms-async \|[^\n]*\n[^\n]*\n\| txn-1 \| \d+% \/ [\d.]+ \|/, 'and reported');
  // Issue #7's targets: each measured one judged against its goal, and printed.
  const targets = report.targets as Array<{ target: string; goal: number; measured: number; met: boolean; rounds: number[]; everyRound: boolean }>;
  t.equal(targets.length, 9 + report.cases.length, 'every target of issue #7, and drms against bindfs on every workload');
  const txn8 = report.cases.find((c: { name: string }) => c.name === 'txn-8');
  const eight = targets.find((x) => x.target === '8 writers, async / ext4')!;
  t.equal(eight.measured, txn8.ratioToExt4['drms-async'], 'from the workload\'s ratio');
  t.ok(targets.every((x) => x.met === (x.target.includes('lag') ? x.measured <= x.goal : x.measured >= x.goal)), 'met exactly where the goal is reached');
  // Each round's figure beside the median: a round ratio pairs the runs of one round, which ran one after the other.
  const runs = txn8.runs as Record<string, Array<{ value: number; lagP99Ms?: number }>>;
  t.same(eight.rounds, runs['drms-async']!.map((s, i) => s.value / runs.ext4![i]!.value), '8 writers: each round\'s ratio, from that round\'s runs');
  t.same(targets.find((x) => x.target === 'txn-8 lag p99 (ms)')!.rounds, runs['drms-async']!.map((s) => s.lagP99Ms), 'each round\'s lag p99');
  t.ok(targets.every((x) => x.rounds.length === report.rounds), 'every target has a figure for every round');
  t.ok(targets.every((x) => x.everyRound === x.rounds.every((v) => (x.target.includes('lag') ? v <= x.goal : v >= x.goal))), 'met in every round exactly where each round reaches the goal');
  const met = targets.filter((x) => x.met);
  t.match(stdout, new RegExp(`Issue #7's targets: ${met.length} of ${targets.length} met, ${met.filter((x) => x.everyRound).length} of them in every round`), 'and the counts are printed');
  t.match(stdout, /\| 8 writers, async \/ ext4 \| 0\.95 \| [\d.]+ \| (yes|yes, not in every round|no) \| \d+% \| [\d.]+(, [\d.]+)* \|/, 'with each round\'s figure in its row');
  t.ok(report.backlog.primaryRssMiB > 0 && report.backlog.catchUpSeconds > 0, 'backlog RSS and catch-up measured');
  // Every write workload again with no backup on the machine: ext4, bindfs, the primary alone, and a primary that
  // mirrors nothing (FUSE's own cost).
  const alone = report.alone as Array<{ name: string; median: Record<string, number>; ratioToExt4: Record<string, number>; machine: Record<string, unknown>; cpuUsPerOp: Record<string, { primary: { fuse: number } }>; disk?: Record<string, { flushes: number; writes: number }> }>;
  t.same(alone.map((a) => a.name), ['txn-1', 'txn-8', 'buf-256', 'buf-4k', 'seq-1m', 'meta'], 'the write workloads measured with the primary alone');
  for (const a of alone) {
    const measured = a.name === 'meta' ? ['bindfs', 'drms-primary', 'ext4'] : ['bindfs', 'drms-passthrough', 'drms-primary', 'ext4'];
    t.same(Object.keys(a.median).sort(), measured, `${a.name}: the primary alone (and passing through, for data) measured beside ext4 and bindfs`);
    t.ok(Object.values(a.median).every((v) => v > 0), `${a.name}: positive figures`);
    t.equal(a.ratioToExt4['drms-primary'], a.median['drms-primary']! / a.median.ext4!, `${a.name}: its ratio to ext4`);
    t.same(Object.keys(a.machine).sort(), measured, `${a.name}: the machine's CPU measured meanwhile`);
    t.ok(a.cpuUsPerOp['drms-primary'].primary.fuse > 0, `${a.name}: and the primary's own by thread`);
    if (a.name !== 'meta') t.ok(a.cpuUsPerOp['drms-passthrough']!.primary.fuse > 0, `${a.name}: the passthrough's requests served by the native binding's threads`);
  }
  // The passthrough is what it says: none of the workloads' operations was journaled (the primary alone journals each).
  t.equal(report.passthroughJournaled, 0, 'the passthrough journaled nothing for all the write workloads');
  const disk = alone[0]!.disk!;
  t.ok(Object.values(disk).every((d) => d.flushes > 0 && d.writes > 0), 'with the disk flushes and writes of each fdatasync');
  // Durability, not speed: the capture log's flush without a journal commit still ends in the disk's cache flush.
  t.ok(disk['drms-primary']!.flushes >= 0.9 * disk.ext4!.flushes, `every fdatasync through the mount flushes the disk's cache, as on ext4 (${disk['drms-primary']!.flushes.toFixed(2)} against ${disk.ext4!.flushes.toFixed(2)} a record)`);
  // Nor more of its writes: the log's pages and the flush, where ext4 writes its inode or journal too (a flush file
  // whose inode-table block other files dirty costs a write more: native/flush.c).
  t.ok(disk['drms-primary']!.writes <= disk.ext4!.writes - 0.3, `an fdatasync through the mount costs the disk fewer writes than on ext4 (${disk['drms-primary']!.writes.toFixed(2)} against ${disk.ext4!.writes.toFixed(2)} a record)`);
  t.match(stdout, /With no backup on this machine[^\n]*\(0 entries journaled\)[^\n]*\n\n\| workload \| unit \| ext4 \| bindfs \| drms primary \| drms passthrough \|/, 'and reported');
  t.match(stdout, /\| sequential 1 MiB writes \+ fdatasync \| MB\/s \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| \d\.\d\d \| \d\.\d\d \|/, 'a row per workload');
  t.match(stdout, /\| 1 writer, 256 B append \+ fdatasync \| ops\/s \|/, 'the Markdown table is printed');
  t.equal(fs.readFileSync(path.join(out, 'latest.md'), 'utf8'), stdout, 'and saved');
  // This run's mounts only: another run on the machine may be mounted meanwhile.
  const base = /^bench: working in (\S+)$/m.exec(stderr)?.[1];
  t.ok(base, 'the run names its directory');
  const left = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => base && l.includes(`${base}/`));
  t.same(left, [], 'no mount left behind');
});

t.test('a mistyped benchmark flag is named, with the usage, and nothing runs', async (t) => {
  for (const [argv, reason] of [
    [['--roudns', '3'], /Unknown option '--roudns'/],
    [['--only', 'txn-9'], /--only names none of: txn-1, txn-8/],
    [['--seconds', 'two'], /--seconds two: not a positive number/],
  ] as const) {
    const err = await run(process.execPath, [BENCH, ...argv]).then(() => undefined, (e: { code: number; stderr: string }) => e);
    t.equal(err?.code, 2, `${argv.join(' ')}: exit 2`);
    t.match(err?.stderr, reason, 'the reason');
    t.match(err?.stderr, /^usage: npm run bench/m, 'the usage');
  }
});
