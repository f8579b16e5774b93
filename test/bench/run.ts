// `npm run bench`: runs each workload on plain ext4, on bindfs (the C passthrough reference) and on drms (async and
// sync, backup on loopback), alternating targets round by round; writes a JSON report and a Markdown table.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';
import { ask } from '../../dist/admin/control.js';
import type { NodeReport } from '../../dist/cli/report.js';
import { cleanup, DRMS, shutdown, startDrms } from './procs.js';
import { READ_BYTES, READ_FILE, type MachineTicks, type WorkerResult, type Workload } from './worker.js';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');
const WORKER = path.join(import.meta.dirname, 'worker.js');

const USAGE = `usage: npm run bench -- [--rounds N] [--seconds S] [--out DIR] [--backlog-mib M] [--quick]
                     [--only txn-1,txn-8,...] [--drms drms-async,drms-sync,...]`;

/** A mistyped flag gets its reason and the usage, not a stack trace. */
function usageError(reason: string): never {
  process.stderr.write(`bench: ${reason}\n${USAGE}\n`);
  process.exit(2);
}

function parsed() {
  try {
    return parseArgs({
      options: {
        rounds: { type: 'string' },
        seconds: { type: 'string', default: '2' },
        out: { type: 'string', default: path.join(ROOT, 'bench-results') },
        'backlog-mib': { type: 'string', default: '1024' },
        quick: { type: 'boolean', default: false },
        only: { type: 'string' },
        drms: { type: 'string' },
        help: { type: 'boolean', default: false },
      },
    }).values;
  } catch (err) {
    return usageError((err as Error).message);
  }
}

const args = parsed();
if (args.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
function positive(flag: 'rounds' | 'seconds' | 'backlog-mib'): number {
  const n = Number(args[flag]);
  return Number.isFinite(n) && n > 0 ? n : usageError(`--${flag} ${args[flag]}: not a positive number`);
}
/** 3, or 1 with --quick; --rounds sets it either way. */
const ROUNDS = args.rounds !== undefined ? positive('rounds') : args.quick ? 1 : 3;
const SECONDS = args.quick ? 0.3 : positive('seconds');
/**
 * Every target first runs every workload once, unmeasured, for this long: the drms processes' code is compiled and
 * every target's caches are warm before the first measured round, as on a server that has been running.
 */
const WARMUP_SECONDS = SECONDS / 4;
const BACKLOG_MIB = args.quick ? 64 : positive('backlog-mib');

interface Case {
  name: string;
  workload: Workload;
  writers: number;
  unit: 'ops/s' | 'MB/s';
  what: string;
}

const ALL_CASES: Case[] = [
  { name: 'txn-1', workload: 'txn', writers: 1, unit: 'ops/s', what: '1 writer, 256 B append + fdatasync' },
  { name: 'txn-8', workload: 'txn', writers: 8, unit: 'ops/s', what: '8 writers, 256 B append + fdatasync' },
  { name: 'buf-256', workload: 'buf256', writers: 1, unit: 'ops/s', what: 'buffered 256 B writes' },
  { name: 'buf-4k', workload: 'buf4k', writers: 1, unit: 'ops/s', what: 'buffered 4 KiB writes' },
  { name: 'seq-1m', workload: 'seq1m', writers: 1, unit: 'MB/s', what: 'sequential 1 MiB writes + fdatasync' },
  { name: 'meta', workload: 'meta', writers: 1, unit: 'ops/s', what: 'create, stat, rename, unlink' },
  { name: 'read-seq', workload: 'readseq', writers: 1, unit: 'MB/s', what: 'sequential 1 MiB reads (warm cache)' },
  { name: 'read-rand', workload: 'readrand', writers: 1, unit: 'ops/s', what: 'random 4 KiB reads (warm cache)' },
];
/** --only txn-1,meta: a subset of the workloads, by name. */
const CASES = args.only ? ALL_CASES.filter((c) => args.only!.split(',').includes(c.name)) : ALL_CASES;
if (CASES.length === 0) usageError(`--only names none of: ${ALL_CASES.map((c) => c.name).join(', ')}`);

/** drms targets: the default (native binding, over io_uring) in both modes, through /dev/fuse, with the writeback cache, and on fuse-native. */
const DRMS_TARGETS = [
  { name: 'drms-async', mode: 'async', flags: ['--binding', 'native'] },
  { name: 'drms-sync', mode: 'sync', flags: ['--binding', 'native'] },
  { name: 'drms-async-devfuse', mode: 'async', flags: ['--binding', 'native', '--no-io-uring'] },
  { name: 'drms-async-wb', mode: 'async', flags: ['--binding', 'native', '--writeback-cache'] },
  { name: 'drms-async-fuse-native', mode: 'async', flags: ['--binding', 'fuse-native'] },
] as const;
type DrmsTarget = (typeof DRMS_TARGETS)[number];
/** --drms drms-async,drms-sync: a subset of the drms targets (ext4 and bindfs always run, for the ratios). */
const DRMS_RUN = args.drms ? DRMS_TARGETS.filter((d) => args.drms!.split(',').includes(d.name)) : DRMS_TARGETS;
if (DRMS_RUN.length === 0) usageError(`--drms names none of: ${DRMS_TARGETS.map((d) => d.name).join(', ')}`);

interface Target {
  /** drms-primary: a primary with no backup on the machine; drms-passthrough: one that mirrors nothing (alonePhase). */
  name: 'ext4' | 'bindfs' | 'drms-primary' | 'drms-passthrough' | DrmsTarget['name'];
  dir: string;
  /** drms processes (primary, backup), for CPU and RSS. */
  procs: ChildProcess[];
  state?: string;
}

interface Sample {
  value: number;
  /** Operations done (all writers). */
  ops: number;
  p50Us?: number;
  p99Us?: number;
  cpuSeconds?: number;
  /** The same CPU seconds by thread: the primary's, and the backup's when it runs on this machine. */
  cpuParts?: ProcessesCpu;
  lagP50Ms?: number;
  lagP99Ms?: number;
  /** How far the backup's durable acknowledgements trail (it defers the flush of plain writes: README). */
  durableLagP50Ms?: number;
  durableLagP99Ms?: number;
  /** The whole machine (every process, the kernel's threads too) while every worker ran: see machineUse. */
  machine?: MachineUse;
}

/**
 * A drms process's CPU by thread: its JavaScript thread, its FUSE threads (libfuse's and io_uring's, which native/
 * names drms-*; fuse-native's are not ours and count as other) and the rest (V8's helpers, libuv's pool). Where a
 * target is missed, this says which of them the time went to.
 */
interface CpuParts {
  js: number;
  fuse: number;
  other: number;
  /** Threads read: /proc truncates each one's CPU to a tick, so the parts are within a tick each of the total. */
  threads: number;
}

interface ProcessesCpu {
  primary: CpuParts;
  backup?: CpuParts;
}

/** Share of all the machine's CPUs busy, and CPU microseconds per operation of the workload. */
interface MachineUse {
  busy: number;
  cpuUsPerOp: number;
}

/** /proc/stat counts in ticks of 1/100 s (USER_HZ). */
const TICK_US = 10_000;

/**
 * The machine's CPU over the window in which every worker was in its measured loop (the latest start to the
 * earliest end: worker processes starting or exiting are left out). Undefined for a window under 5 ticks.
 */
function machineUse(out: WorkerResult[]): MachineUse | undefined {
  const latest = (ts: MachineTicks[], pick: (a: MachineTicks, b: MachineTicks) => boolean) => ts.reduce((a, b) => (pick(a, b) ? a : b));
  const start = latest(out.map((o) => o.ticks.start), (a, b) => a.total >= b.total);
  const end = latest(out.map((o) => o.ticks.end), (a, b) => a.total <= b.total);
  const [busy, total] = [end.busy - start.busy, end.total - start.total];
  if (total < 5) return undefined;
  const seconds = (total * TICK_US) / 1e6 / os.cpus().length;
  const opsPerSecond = out.reduce((n, o) => n + o.ops / o.seconds, 0);
  return { busy: busy / total, cpuUsPerOp: (busy * TICK_US) / (opsPerSecond * seconds) };
}


async function main(): Promise<void> {
  await ensureBindfs();
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'drms-bench-'));
  cleanup.push(async () => fs.rmSync(base, { recursive: true, force: true }));
  process.stderr.write(`bench: working in ${base}\n`);
  const secret = path.join(base, 'secret');
  fs.writeFileSync(secret, randomBytes(24).toString('hex'), { mode: 0o600 });

  const targets: Target[] = [{ name: 'ext4', dir: mk(base, 'ext4'), procs: [] }, await bindfs(base)];
  for (const d of DRMS_RUN) targets.push(await drmsPair(base, d, secret));
  for (const t of targets) await prepareReadFile(t);
  await warmUp(targets);

  const results: Record<string, Record<string, Sample[]>> = {};
  for (let round = 0; round < ROUNDS; round++) {
    for (const c of CASES) {
      // Alternate: each round starts with a different target, so drift on the machine spreads over all of them.
      const order = targets.map((_, i) => targets[(i + round) % targets.length]!);
      for (const t of order) {
        const s = await runCase(c, t);
        ((results[c.name] ??= {})[t.name] ??= []).push(s);
        process.stderr.write(`round ${round + 1}/${ROUNDS} ${c.name.padEnd(9)} ${t.name.padEnd(10)} ${s.value.toFixed(1)} ${c.unit}\n`);
      }
    }
  }
  const peakRss = Object.fromEntries(targets.filter((t) => t.procs.length).map((t) => [t.name, t.procs.map((p) => procStatus(p.pid!).VmHWM ?? 0)]));
  const alone = await alonePhase(base, secret, targets);
  const backlog = await backlogPhase(base, secret);
  const report = summarize(results, peakRss, alone, backlog);
  fs.mkdirSync(args.out!, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  fs.writeFileSync(path.join(args.out!, `bench-${stamp}.json`), JSON.stringify(report, null, 2));
  const md = markdown(report);
  fs.writeFileSync(path.join(args.out!, 'latest.md'), md);
  process.stdout.write(md);
}

function mk(base: string, name: string): string {
  const d = path.join(base, name);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

async function ensureBindfs(): Promise<void> {
  if (await run('sh', ['-c', 'command -v bindfs']).then(() => true, () => false)) return;
  process.stderr.write('bench: installing bindfs (the C FUSE passthrough reference) from Debian\n');
  await run('sh', ['-c', 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bindfs >/dev/null']);
}

async function bindfs(base: string): Promise<Target> {
  const src = mk(base, 'bindfs-src');
  const dir = mk(base, 'bindfs');
  await run('bindfs', ['-o', 'big_writes', src, dir]).catch(() => run('bindfs', [src, dir]));
  cleanup.push(() => unmount(dir));
  return { name: 'bindfs', dir, procs: [] };
}

async function drmsPair(base: string, { name, mode, flags }: DrmsTarget, secret: string): Promise<Target> {
  const dir = mk(base, name);
  const state = path.join(base, `${name}-pstate`);
  const backup = await startDrms(['backup', '--listen', '127.0.0.1:0', '--target', path.join(base, `${name}-dr`), '--state', path.join(base, `${name}-bstate`), '--secret-file', secret], 'backup listening');
  const port = String(backup.line.listen).split(':').pop();
  cleanup.push(() => unmount(dir));
  const primary = await startDrms(['primary', '--mount', dir, '--state', state, '--to', `127.0.0.1:${port}`, '--secret-file', secret, '--mode', mode, ...flags], 'mounted');
  return { name, dir, procs: [primary.proc, backup.proc], state };
}

async function prepareReadFile(t: Target): Promise<void> {
  await run('dd', ['if=/dev/urandom', `of=${path.join(t.dir, READ_FILE)}`, 'bs=1M', `count=${READ_BYTES / 2 ** 20}`, 'status=none']);
  await drained(t);
}

/** Waits until a drms target's backup has applied everything, so one run's shipping does not load the next. */
async function drained(t: Target): Promise<void> {
  if (!t.state) return;
  await run(DRMS, ['sync', '--state', t.state, '--timeout', '300']);
}

/** One unmeasured run of every workload on every target (see WARMUP_SECONDS). */
async function warmUp(targets: Target[], cases = CASES): Promise<void> {
  for (const t of targets) for (const c of cases) await runCase(c, t, WARMUP_SECONDS);
}

async function runCase(c: Case, t: Target, runSeconds = SECONDS): Promise<Sample> {
  const cpuBefore = t.procs.map((p) => threadCpu(p.pid!));
  const lag = t.state && c.workload === 'txn' ? sampleLag(t.state) : undefined;
  const out = await runWorkers(c.workload, t.dir, c.writers, runSeconds);
  const lags = await lag?.stop();
  const cpuAfter = t.procs.map((p) => threadCpu(p.pid!));
  const cpu = cpuAfter.reduce((n, after, i) => n + after.last - cpuBefore[i]!.first, 0);
  const [primary, backup] = t.procs.map((p, i) => cpuPartsSince(cpuBefore[i]!, cpuAfter[i]!, p.pid!));
  const seconds = Math.max(...out.map((o) => o.seconds));
  const ops = out.reduce((n, o) => n + o.ops, 0);
  const bytes = out.reduce((n, o) => n + o.bytes, 0);
  const lat = out.flatMap((o) => o.latUs ?? []).sort((a, b) => a - b);
  // Remove what the run wrote, then let the backup catch up: this run's shipping must not load the next.
  removeRunFiles(t.dir);
  await drained(t);
  return {
    value: c.unit === 'MB/s' ? bytes / seconds / 1e6 : ops / seconds,
    ops,
    ...(lat.length && { p50Us: pct(lat, 0.5), p99Us: pct(lat, 0.99) }),
    ...(primary && { cpuSeconds: cpu, cpuParts: { primary, ...(backup && { backup }) } }),
    ...(lags?.applied.length && { lagP50Ms: pct(lags.applied, 0.5), lagP99Ms: pct(lags.applied, 0.99) }),
    ...(lags?.durable.length && { durableLagP50Ms: pct(lags.durable, 0.5), durableLagP99Ms: pct(lags.durable, 0.99) }),
    machine: machineUse(out),
  };
}

/**
 * `writers` worker processes running `workload` on `dir` for `seconds`: each says when it is ready, and all are let
 * go together, so that their loops overlap (a process start on a busy machine can take longer than a whole run).
 */
async function runWorkers(workload: Workload, dir: string, writers: number, seconds: number): Promise<WorkerResult[]> {
  const workers = Array.from({ length: writers }, (_, id) => startWorker([workload, dir, String(seconds), String(id)]));
  try {
    await Promise.all(workers.map((w) => w.ready));
  } finally {
    for (const w of workers) w.proc.stdin!.end('g');
  }
  return Promise.all(workers.map((w) => w.result));
}

function startWorker(args: string[]): { proc: ChildProcess; ready: Promise<void>; result: Promise<WorkerResult> } {
  const proc = spawn(process.execPath, [WORKER, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  proc.stdin!.on('error', () => undefined); // a worker that failed has gone: its result says why
  let stdout = '';
  let stderr = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const result = new Promise<WorkerResult>((resolve, reject) => {
    proc.on('error', reject);
    proc.on('close', (code) => {
      if (code === 0) resolve(JSON.parse(stdout.slice(stdout.indexOf('\n') + 1)) as WorkerResult);
      else reject(new Error(`bench worker ${args.join(' ')} exited with ${code}: ${stderr.trim()}`));
    });
  });
  const ready = new Promise<void>((resolve, reject) => {
    proc.stdout!.on('data', () => stdout.includes('\n') && resolve());
    result.catch(reject);
  });
  return { proc, ready, result };
}

/** Removes what a run wrote (through the target, so drms journals it too); the read workloads' file stays. */
function removeRunFiles(dir: string): void {
  for (const name of fs.readdirSync(dir)) if (name !== READ_FILE) fs.rmSync(path.join(dir, name), { recursive: true, force: true });
}

/** The primary's replication lag (not yet applied on the backup) and durable lag, every 20 ms, in ms, sorted. */
function sampleLag(state: string): { stop(): Promise<{ applied: number[]; durable: number[] }> } {
  const applied: number[] = [];
  const durable: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const r = await ask<NodeReport>(state, { cmd: 'status' }, 2000).catch(() => undefined);
      if (r) {
        applied.push((r.lagSeconds ?? 0) * 1000);
        durable.push((r.durableLagSeconds ?? 0) * 1000);
      }
      await new Promise((res) => setTimeout(res, 20));
    }
  })();
  const sorted = (xs: number[]) => xs.sort((a, b) => a - b);
  return {
    async stop() {
      running = false;
      await loop;
      return { applied: sorted(applied), durable: sorted(durable) };
    },
  };
}

/** A write workload with no backup on this machine: ext4, bindfs, the drms primary alone (as with its backup at a DR site) and drms passing through. */
interface AloneCase extends CaseFigures {
  machine: Record<string, MachineUse>;
  cpuUsPerOp: Record<string, ProcessesCpu>;
  /** The transaction workloads: disk cache flushes and writes per fdatasync, from the disk's counters. */
  disk?: Record<string, { flushes: number; writes: number }>;
}

interface BacklogResult {
  mib: number;
  writeSeconds: number;
  primaryRssMiB: number;
  primaryRssAnonMiB: number;
  catchUpSeconds: number;
  catchUpMBps: number;
}

/**
 * Every write workload with no backup on the machine: on ext4, bindfs and a drms primary whose backup is away (its
 * journal holds what it would ship), so that what the backup costs the two shared cores and the one disk is not
 * counted; and, for the data workloads, on a primary whose policy mirrors nothing, whose native data path passes
 * every file through unjournaled: what FUSE alone costs, before any capture (not for meta: with a policy that excludes
 * anything, namespace changes go through JavaScript's policy). The primaries are stopped afterwards: their backlog is
 * not the backlog phase's.
 */
async function alonePhase(base: string, secret: string, targets: Target[]): Promise<{ cases: AloneCase[]; passthroughJournaled: number }> {
  const { dir, primary } = await primaryWithoutBackup(base, 'alone', '127.0.0.1:1', secret);
  const policy = path.join(base, 'mirror-nothing.json');
  fs.writeFileSync(policy, JSON.stringify({ exclude: ['*'] }));
  const passthrough = await primaryWithoutBackup(base, 'passthrough', '127.0.0.1:1', secret, ['--policy', policy]);
  const lastSeq = async () => {
    const seq = (await ask<NodeReport>(passthrough.state, { cmd: 'status' }, 2000))?.lastSeq;
    if (seq === undefined) throw new Error(`bench: the passthrough primary (${passthrough.state}) reports no lastSeq`);
    return seq;
  };
  const seqBefore = await lastSeq();
  const dirs: Target[] = [
    ...targets.filter((t) => !t.state),
    { name: 'drms-primary', dir, procs: [primary] },
    { name: 'drms-passthrough', dir: passthrough.dir, procs: [passthrough.primary] },
  ];
  const stat = diskStat(base); // the disk under them all (the mount's own device is FUSE's)
  // Fields of /sys/block/*/stat: writes completed (5th), flushes completed (16th).
  const counters = () => (stat ? fs.readFileSync(stat, 'utf8').trim().split(/\s+/).map(Number) : undefined);
  const out: AloneCase[] = [];
  const writes = CASES.filter((c) => c.workload !== 'readseq' && c.workload !== 'readrand');
  const passedThrough = writes.filter((c) => c.workload !== 'meta');
  await warmUp(dirs.filter((t) => t.name === 'drms-primary'), writes); // ext4 and bindfs ran them already
  await warmUp(dirs.filter((t) => t.name === 'drms-passthrough'), passedThrough);
  for (const c of writes) {
    const samples: Record<string, Sample[]> = {};
    const disk: Record<string, Array<{ flushes: number; writes: number }>> = {};
    const measured = passedThrough.includes(c) ? dirs : dirs.filter((t) => t.name !== 'drms-passthrough');
    for (let round = 0; round < Math.max(2, ROUNDS); round++) {
      for (const t of round % 2 ? [...measured].reverse() : measured) {
        const before = counters();
        const r = await runCase(c, t);
        const after = counters();
        (samples[t.name] ??= []).push(r);
        // A transaction workload's op is one record and one fdatasync.
        if (before && after && c.workload === 'txn') (disk[t.name] ??= []).push({ flushes: (after[15]! - before[15]!) / r.ops, writes: (after[4]! - before[4]!) / r.ops });
      }
    }
    out.push({
      ...figures(c, medians(samples, (s) => s.value)),
      machine: machineMedians(samples),
      cpuUsPerOp: cpuSplit(samples),
      ...(Object.keys(disk).length && { disk: Object.fromEntries(Object.entries(disk).map(([t, ds]) => [t, { flushes: median(ds.map((d) => d.flushes)), writes: median(ds.map((d) => d.writes)) }])) }),
    });
  }
  // Entries it journaled for all the workloads' operations (none, if it is the passthrough it is reported as).
  const passthroughJournaled = (await lastSeq()) - seqBefore;
  for (const [proc, mount] of [[primary, dir], [passthrough.primary, passthrough.dir]] as const) {
    proc.kill('SIGKILL');
    await new Promise((r) => (proc.exitCode !== null || proc.signalCode !== null ? r(undefined) : proc.once('exit', r)));
    await unmount(mount);
  }
  return { cases: out, passthroughJournaled };
}

/** A primary mounted on `<base>/<name>` whose backup (at `to`) is not there: its journal holds everything, uncapped. */
async function primaryWithoutBackup(base: string, name: string, to: string, secret: string, flags: string[] = []) {
  const dir = mk(base, name);
  const state = path.join(base, `${name}-pstate`);
  cleanup.push(() => unmount(dir));
  const { proc: primary } = await startDrms(['primary', '--mount', dir, '--state', state, '--to', to, '--secret-file', secret, '--max-backlog', '64G', ...flags], 'mounted');
  return { dir, state, primary };
}

/** Lazily unmounts a FUSE mount of the benchmark's, if it is still there. */
async function unmount(dir: string): Promise<void> {
  await run('fusermount', ['-uz', dir]).catch(() => undefined);
}

/** RSS of the primary holding a large backlog with no backup, and how fast a backup drains it. */
async function backlogPhase(base: string, secret: string): Promise<BacklogResult> {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const { dir, state, primary } = await primaryWithoutBackup(base, 'backlog', `127.0.0.1:${port}`, secret);
  const t0 = Date.now();
  await run('dd', ['if=/dev/zero', `of=${path.join(dir, 'backlog.dat')}`, 'bs=1M', `count=${BACKLOG_MIB}`, 'conv=fsync', 'status=none']);
  const writeSeconds = (Date.now() - t0) / 1000;
  const st = procStatus(primary.pid!);
  await run('sync');
  await startDrms(['backup', '--listen', `127.0.0.1:${port}`, '--target', path.join(base, 'backlog-dr'), '--state', path.join(base, 'backlog-bstate'), '--secret-file', secret], 'backup listening');
  // Timed from the reconnect (the shipper's backoff after a long outage is not catch-up speed) to the last ack.
  while (!(await ask<NodeReport>(state, { cmd: 'status' }, 2000))?.connected) await new Promise((r) => setTimeout(r, 5));
  const t1 = Date.now();
  await run(DRMS, ['sync', '--state', state, '--timeout', '600']);
  const catchUpSeconds = (Date.now() - t1) / 1000;
  return {
    mib: BACKLOG_MIB, writeSeconds, primaryRssMiB: (st.VmRSS ?? 0) / 1024, primaryRssAnonMiB: (st.RssAnon ?? 0) / 1024,
    catchUpSeconds, catchUpMBps: (BACKLOG_MIB * 2 ** 20) / catchUpSeconds / 1e6,
  };
}

/** The block device's stat file under /sys (the whole disk's, for a partition), if it counts flushes. */
function diskStat(dir: string): string | undefined {
  const dev = fs.statSync(dir).dev;
  const sys = `/sys/dev/block/${(dev >> 8) & 0xfff}:${(dev & 0xff) | ((dev >> 12) & 0xfff00)}`;
  for (const f of [path.join(sys, 'stat'), path.join(fs.realpathSync(sys), '..', 'stat')]) {
    if (fs.existsSync(f) && fs.readFileSync(f, 'utf8').trim().split(/\s+/).length >= 17) return f;
  }
  return undefined;
}

/** utime + stime of a /proc stat file (a process's or a thread's), in seconds. */
function statSeconds(file: string): number {
  const fields = fs.readFileSync(file, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // in clock ticks of 1/100 s
}

/**
 * A process's CPU seconds now: each thread's, and the whole process's (threads that ended included) read before and
 * after them, so that the threads' time between two readings is within the process's.
 */
interface ThreadCpu {
  first: number;
  threads: Map<number, { fuse: boolean; seconds: number }>;
  last: number;
}

function threadCpu(pid: number): ThreadCpu {
  const first = statSeconds(`/proc/${pid}/stat`);
  const threads = new Map<number, { fuse: boolean; seconds: number }>();
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const fuse = fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').startsWith('drms-');
      threads.set(Number(tid), { fuse, seconds: statSeconds(`/proc/${pid}/task/${tid}/stat`) });
    } catch {
      // the thread ended meanwhile: the process's total still counts it
    }
  }
  return { first, threads, last: statSeconds(`/proc/${pid}/stat`) };
}

/** CPU seconds from `before` to `after` by part; a thread that ended meanwhile counts as other. */
function cpuPartsSince(before: ThreadCpu, after: ThreadCpu, pid: number): CpuParts {
  const since = (tid: number, now: number) => now - (before.threads.get(tid)?.seconds ?? 0);
  let js = 0;
  let fuse = 0;
  for (const [tid, t] of after.threads) {
    if (tid === pid) js = since(tid, t.seconds);
    else if (t.fuse) fuse += since(tid, t.seconds);
  }
  return { js, fuse, other: Math.max(0, after.last - before.first - js - fuse), threads: after.threads.size };
}

/** /proc/PID/status sizes in KiB. */
function procStatus(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const m = /^(\w+):\s+(\d+) kB/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

/** The median of a figure of each target's samples (targets with none left out). */
function medians(runs: Record<string, Sample[]>, f: (s: Sample) => number | undefined): Record<string, number> {
  return Object.fromEntries(Object.entries(runs).flatMap(([t, ss]) => {
    const vs = ss.map(f).filter((v): v is number => v !== undefined);
    return vs.length ? [[t, median(vs)]] : [];
  }));
}

function machineMedians(runs: Record<string, Sample[]>): Record<string, MachineUse> {
  const busy = medians(runs, (s) => s.machine?.busy);
  const us = medians(runs, (s) => s.machine?.cpuUsPerOp);
  return Object.fromEntries(Object.keys(busy).map((t) => [t, { busy: busy[t]!, cpuUsPerOp: us[t]! }]));
}

/** The drms processes' CPU by part (see CpuParts), in µs per operation: each part's median, by target. */
function cpuSplit(runs: Record<string, Sample[]>): Record<string, ProcessesCpu> {
  const perOp = (pick: (s: Sample) => CpuParts | undefined, t: string): CpuParts | undefined => {
    const ss = runs[t]!.filter((s) => pick(s) && s.ops > 0);
    if (!ss.length) return undefined;
    const part = (k: 'js' | 'fuse' | 'other') => median(ss.map((s) => (pick(s)![k] / s.ops) * 1e6));
    return { js: part('js'), fuse: part('fuse'), other: part('other'), threads: Math.max(...ss.map((s) => pick(s)!.threads)) };
  };
  return Object.fromEntries(Object.keys(runs).flatMap((t) => {
    const primary = perOp((s) => s.cpuParts?.primary, t);
    const backup = perOp((s) => s.cpuParts?.backup, t);
    return primary ? [[t, { primary, ...(backup && { backup }) }]] : [];
  }));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** A workload's medians by target, and their ratios to ext4's and bindfs's. */
interface CaseFigures {
  name: string;
  what: string;
  unit: string;
  median: Record<string, number>;
  ratioToExt4: Record<string, number>;
  ratioToBindfs: Record<string, number>;
}

function figures(c: Case, median: Record<string, number>): CaseFigures {
  const ratio = (base: string) => Object.fromEntries(Object.entries(median).map(([t, v]) => [t, v / median[base]!]));
  return { name: c.name, what: c.what, unit: c.unit, median, ratioToExt4: ratio('ext4'), ratioToBindfs: ratio('bindfs') };
}

interface CaseReport extends CaseFigures {
  latencyUs?: Record<string, { p50: number; p99: number }>;
  cpuSeconds?: Record<string, number>;
  cpuUsPerOp?: Record<string, ProcessesCpu>;
  lagMs?: Record<string, { p50: number; p99: number }>;
  durableLagMs?: Record<string, { p50: number; p99: number }>;
  machine?: Record<string, MachineUse>;
  runs: Record<string, Sample[]>;
}

/** One of issue #7's targets, as this run measured it. */
interface TargetResult {
  target: string;
  goal: number;
  measured: number;
  met: boolean;
  /** How far from the goal: measured / goal (a ratio target) or goal / measured (lag), 1 or more once met. */
  ofGoal: number;
  /** The same measure in each round (a ratio of the targets' runs in that round, which ran one after the other). */
  rounds: number[];
  /** Whether every round met the goal too: where not, the median's verdict is within this machine's noise. */
  everyRound: boolean;
}

/** Issue #7's targets for the cases this run measured (drms async unless named): ratios to ext4 and bindfs, lag. */
function targetsOf(cases: CaseReport[]): TargetResult[] {
  const byName = new Map(cases.map((c) => [c.name, c]));
  const out: TargetResult[] = [];
  /** A target met at `goal` or above, or (`atMost`, a lag) at `goal` or below. */
  const judge = (target: string, goal: number, measured: number | undefined, rounds: number[], atMost = false) => {
    if (measured === undefined) return;
    const meets = (v: number) => (atMost ? v <= goal : v >= goal);
    const ofGoal = !atMost ? measured / goal : measured > 0 ? goal / measured : Infinity;
    out.push({ target, goal, measured, met: meets(measured), ofGoal, rounds, everyRound: rounds.every(meets) });
  };
  /** `t`'s runs over `base`'s, round by round. */
  const perRound = (c: CaseReport | undefined, t: string, base: string) => {
    const bases = c?.runs[base] ?? [];
    return (c?.runs[t] ?? []).flatMap((s, i) => (bases[i]?.value ? [s.value / bases[i]!.value] : []));
  };
  const atLeast = (target: string, goal: number, name: string, t = 'drms-async', base = 'ext4') => {
    const c = byName.get(name);
    judge(target, goal, base === 'ext4' ? c?.ratioToExt4[t] : c?.ratioToBindfs[t], perRound(c, t, base));
  };
  atLeast('8 writers, async / ext4', 0.95, 'txn-8');
  atLeast('1 writer, async / ext4', 0.9, 'txn-1');
  atLeast('1 writer, sync / ext4', 0.85, 'txn-1', 'drms-sync');
  atLeast('8 writers, sync / ext4', 0.85, 'txn-8', 'drms-sync');
  atLeast('sequential writes / ext4', 0.8, 'seq-1m');
  atLeast('buffered 256 B / ext4', 0.5, 'buf-256');
  atLeast('buffered 4 KiB / ext4', 0.5, 'buf-4k');
  for (const name of ['txn-1', 'txn-8']) {
    const c = byName.get(name);
    const rounds = (c?.runs['drms-async'] ?? []).flatMap((s) => (s.lagP99Ms === undefined ? [] : [s.lagP99Ms]));
    judge(`${name} lag p99 (ms)`, 10, c?.lagMs?.['drms-async']?.p99, rounds, true);
  }
  for (const c of cases) atLeast(`${c.name}, async / bindfs`, 1, c.name, 'drms-async', 'bindfs');
  return out;
}

function summarize(results: Record<string, Record<string, Sample[]>>, peakRssKiB: Record<string, number[]>, alone: { cases: AloneCase[]; passthroughJournaled: number }, backlog: BacklogResult) {
  const cases: CaseReport[] = CASES.map((c) => {
    const runs = results[c.name]!;
    const med = (f: (s: Sample) => number | undefined) => medians(runs, f);
    const pair = (a: Record<string, number>, b: Record<string, number>) => Object.fromEntries(Object.keys(a).map((t) => [t, { p50: a[t]!, p99: b[t]! }]));
    const report: CaseReport = { ...figures(c, med((s) => s.value)), runs };
    if (c.workload === 'txn') report.latencyUs = pair(med((s) => s.p50Us), med((s) => s.p99Us));
    const cpu = med((s) => s.cpuSeconds);
    if (Object.keys(cpu).length) {
      report.cpuSeconds = cpu;
      report.cpuUsPerOp = cpuSplit(runs);
    }
    const lagP50 = med((s) => s.lagP50Ms);
    if (Object.keys(lagP50).length) report.lagMs = pair(lagP50, med((s) => s.lagP99Ms));
    const durableP50 = med((s) => s.durableLagP50Ms);
    if (Object.keys(durableP50).length) report.durableLagMs = pair(durableP50, med((s) => s.durableLagP99Ms));
    report.machine = machineMedians(runs);
    return report;
  });
  return {
    date: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memGiB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.version },
    rounds: ROUNDS,
    secondsPerRun: SECONDS,
    warmUpSeconds: WARMUP_SECONDS,
    cases,
    targets: targetsOf(cases),
    peakRssMiB: Object.fromEntries(Object.entries(peakRssKiB).map(([t, [p, b]]) => [t, { primary: (p ?? 0) / 1024, backup: (b ?? 0) / 1024 }])),
    alone: alone.cases,
    passthroughJournaled: alone.passthroughJournaled,
    backlog,
  };
}

function markdown(r: ReturnType<typeof summarize>): string {
  const f = (v: number | undefined, d = 1) => (v === undefined ? '' : v >= 100 ? v.toFixed(0) : v.toFixed(d));
  const lines = [
    `drms benchmark, ${r.date}: ${r.machine.cpus} cores (${r.machine.cpuModel}), ${r.machine.memGiB} GiB, Linux ${r.machine.kernel}, Node ${r.machine.node}; median of ${r.rounds} alternating runs of ${r.secondsPerRun} s, after one unmeasured run of ${r.warmUpSeconds} s of every workload on every target.`,
    '',
    'drms async and sync: the native binding (the default), requests over io_uring; /dev/fuse: with --no-io-uring; +wb: with --writeback-cache; fuse-native: the fallback binding.',
    '',
    '| workload | unit | ext4 | bindfs | drms async | drms sync | async /dev/fuse | async +wb | async fuse-native | async / ext4 | async / bindfs | sync / ext4 | /dev/fuse / ext4 | +wb / ext4 | fuse-native / ext4 |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const c of r.cases) {
    const [m, x] = [c.median, c.ratioToExt4];
    lines.push(`| ${c.what} | ${c.unit} | ${f(m.ext4)} | ${f(m.bindfs)} | ${f(m['drms-async'])} | ${f(m['drms-sync'])} | ${f(m['drms-async-devfuse'])} | ${f(m['drms-async-wb'])} | ${f(m['drms-async-fuse-native'])} | `
      + `${f(x['drms-async'], 2)} | ${f(c.ratioToBindfs['drms-async'], 2)} | ${f(x['drms-sync'], 2)} | ${f(x['drms-async-devfuse'], 2)} | ${f(x['drms-async-wb'], 2)} | ${f(x['drms-async-fuse-native'], 2)} |`);
  }
  if (r.targets.length) {
    const met = r.targets.filter((t) => t.met);
    lines.push('', `Issue #7's targets: ${met.length} of ${r.targets.length} met, ${met.filter((t) => t.everyRound).length} of them in every round (where the time goes: the drms processes' CPU by thread and the whole machine's, below; profiles in README, "Benchmark").`, '', '| target | goal | measured | met | of the goal | each round |', '|---|---|---|---|---|---|');
    for (const t of r.targets) {
      lines.push(`| ${t.target} | ${t.goal} | ${f(t.measured, 2)} | ${t.met ? (t.everyRound ? 'yes' : 'yes, not in every round') : 'no'} | ${Number.isFinite(t.ofGoal) ? `${Math.round(t.ofGoal * 100)}%` : ''} | ${t.rounds.map((v) => f(v, 2)).join(', ')} |`);
    }
  }
  const drms = DRMS_TARGETS.map((d) => d.name);
  lines.push('', `| transaction workload | ext4 | bindfs | ${drms.join(' | ')} |`, `|---|---|---|${drms.map(() => '---|').join('')}`);
  for (const c of r.cases.filter((c) => c.latencyUs)) {
    const l = c.latencyUs!;
    const cell = (t: string) => (l[t] ? `${f(l[t]!.p50)} / ${f(l[t]!.p99)}` : '');
    lines.push(`| ${c.name} latency p50 / p99 (µs) | ${cell('ext4')} | ${cell('bindfs')} | ${drms.map(cell).join(' | ')} |`);
    const lag = c.lagMs;
    if (lag) lines.push(`| ${c.name} replication lag p50 / p99 (ms) | | | ${drms.map((t) => `${f(lag[t]?.p50)} / ${f(lag[t]?.p99)}`).join(' | ')} |`);
    const durable = c.durableLagMs;
    if (durable) lines.push(`| ${c.name} durable at the backup, lag p50 / p99 (ms) | | | ${drms.map((t) => `${f(durable[t]?.p50)} / ${f(durable[t]?.p99)}`).join(' | ')} |`);
  }
  lines.push('', `| drms CPU seconds per run (primary + backup) | ${drms.join(' | ')} |`, `|---|${drms.map(() => '---|').join('')}`);
  for (const c of r.cases.filter((c) => c.cpuSeconds)) lines.push(`| ${c.name} | ${drms.map((t) => f(c.cpuSeconds![t], 2)).join(' | ')} |`);
  const parts = (p: CpuParts | undefined) => (p ? [p.js, p.fuse, p.other].map((v) => f(v)).join(' / ') : '');
  const split = (s: ProcessesCpu | undefined) => (s ? `${parts(s.primary)}${s.backup ? `; ${f(s.backup.js)} / ${f(s.backup.other + s.backup.fuse)}` : ''}` : '');
  lines.push('', 'Where the drms processes\' CPU goes, µs per operation: the primary\'s JavaScript thread / its FUSE threads (libfuse\'s and io_uring\'s; fuse-native\'s count as other) / its other threads (V8, libuv\'s pool); then the backup\'s JavaScript thread / its other threads.', '',
    `| workload | ${drms.join(' | ')} |`, `|---|${drms.map(() => '---|').join('')}`);
  for (const c of r.cases.filter((c) => c.cpuUsPerOp)) lines.push(`| ${c.name} | ${drms.map((t) => split(c.cpuUsPerOp![t])).join(' | ')} |`);
  const use = (m: Record<string, MachineUse> | undefined, t: string) => (m?.[t] ? `${Math.round(m[t]!.busy * 100)}% / ${f(m[t]!.cpuUsPerOp)}` : '');
  lines.push('', `The whole machine while the workers ran (every process and the kernel's threads; ${r.machine.cpus} cores): share of its CPU busy / CPU µs per operation.`, '',
    `| workload | ext4 | bindfs | ${drms.join(' | ')} |`, `|---|---|---|${drms.map(() => '---|').join('')}`);
  for (const c of r.cases) lines.push(`| ${c.name} | ${use(c.machine, 'ext4')} | ${use(c.machine, 'bindfs')} | ${drms.map((t) => use(c.machine, t)).join(' | ')} |`);
  const rss = r.peakRssMiB;
  lines.push('', `Peak RSS (MiB): ${drms.map((t) => `${t} primary ${f(rss[t]?.primary)}, backup ${f(rss[t]?.backup)}`).join('; ')}.`);
  if (r.alone.length) {
    lines.push('', 'With no backup on this machine (drms: its primary alone, as with its backup at a DR site; the targets above are judged with the backup on loopback). '
      + `Passthrough: a primary whose policy mirrors nothing, its files passed through by the native data path unjournaled (${r.passthroughJournaled} entries journaled): what FUSE alone costs (not run for meta: with a policy, namespace changes go through JavaScript).`, '',
      '| workload | unit | ext4 | bindfs | drms primary | drms passthrough | primary / ext4 | passthrough / ext4 | primary / bindfs |', '|---|---|---|---|---|---|---|---|---|');
    for (const a of r.alone) {
      const [m, x] = [a.median, a.ratioToExt4];
      lines.push(`| ${a.what} | ${a.unit} | ${f(m.ext4)} | ${f(m.bindfs)} | ${f(m['drms-primary'])} | ${f(m['drms-passthrough'])} | ${f(x['drms-primary'], 2)} | ${f(x['drms-passthrough'], 2)} | ${f(a.ratioToBindfs['drms-primary'], 2)} |`);
    }
    lines.push('', 'The whole machine meanwhile: share of its CPU busy / CPU µs per operation; and the primary\'s own CPU by thread, as above.', '',
      '| workload | ext4 | bindfs | drms primary | drms passthrough | the primary: JS / FUSE / other (µs per op) |', '|---|---|---|---|---|---|');
    for (const a of r.alone) lines.push(`| ${a.name} | ${use(a.machine, 'ext4')} | ${use(a.machine, 'bindfs')} | ${use(a.machine, 'drms-primary')} | ${use(a.machine, 'drms-passthrough')} | ${split(a.cpuUsPerOp['drms-primary'])} |`);
    for (const a of r.alone.filter((a) => a.disk)) {
      lines.push('', `${a.what}, disk operations per fdatasync: ${Object.entries(a.disk!).map(([t, d]) => `${t} ${d.flushes.toFixed(2)} flushes and ${d.writes.toFixed(2)} writes`).join('; ')}.`);
    }
  }
  const b = r.backlog;
  lines.push('', `Backlog of ${b.mib} MiB with no backup: primary RSS ${f(b.primaryRssMiB)} MiB (anonymous ${f(b.primaryRssAnonMiB)} MiB; the rest is lmdb's file-backed map). A backup then drained it in ${f(b.catchUpSeconds, 2)} s from its reconnect (${f(b.catchUpMBps)} MB/s), files and lmdb flushed on the backup.`, '');
  return lines.join('\n');
}

process.on('SIGINT', () => void shutdown().then(() => process.exit(130)));
// A caller's timeout (the smoke test's) stops the run this way: its mounts and processes go with it.
process.on('SIGTERM', () => void shutdown().then(() => process.exit(143)));
main().then(shutdown, async (err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
  await shutdown();
  process.exitCode = 1;
});
