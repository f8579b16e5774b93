// One benchmark workload in its own process, against one directory, for a fixed time; prints one JSON line.
// Runs outside every drms process, so synchronous calls into a mount are safe here.
import fs from 'node:fs';
import path from 'node:path';

export type Workload = 'txn' | 'buf256' | 'buf4k' | 'seq1m' | 'meta' | 'readseq' | 'readrand';

export interface WorkerResult {
  ops: number;
  bytes: number;
  seconds: number;
  /** Per-operation latencies in microseconds (txn only). */
  latUs?: number[];
  /** The whole machine's CPU ticks when the measured loop began and when it ended (see machineTicks). */
  ticks: { start: MachineTicks; end: MachineTicks };
}

/** /proc/stat's first line: ticks every CPU spent busy (any state but idle and iowait), and in all. */
export interface MachineTicks {
  busy: number;
  total: number;
}

export function machineTicks(): MachineTicks {
  const [, ...fields] = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/);
  // user nice system idle iowait irq softirq steal (guest time is inside user already).
  const [user, nice, system, idle, iowait, irq, softirq, steal] = fields.slice(0, 8).map(Number) as number[];
  const busy = user! + nice! + system! + irq! + softirq! + steal!;
  return { busy, total: busy + idle! + iowait! };
}

/** The file read by the read workloads, written once per target before they run. */
export const READ_FILE = 'read.dat';
export const READ_BYTES = 64 * 2 ** 20;

/** Runs `workload` for `seconds`. */
function run(workload: Workload, dir: string, seconds: number, id: number): WorkerResult {
  const deadline = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
  const now = () => process.hrtime.bigint();
  const start = now();
  const startTicks = machineTicks();
  const done = (ops: number, bytes: number, latUs?: number[]): WorkerResult => ({ ops, bytes, seconds: Number(now() - start) / 1e9, latUs, ticks: { start: startTicks, end: machineTicks() } });
  switch (workload) {
    case 'txn': {
      // The transaction workload: append a 256-byte record, fdatasync, repeat.
      const fd = fs.openSync(path.join(dir, `txn-${id}.log`), 'a');
      const record = Buffer.alloc(256, 0x41 + (id % 26));
      const latUs: number[] = [];
      while (now() < deadline) {
        const t0 = now();
        fs.writeSync(fd, record);
        fs.fdatasyncSync(fd);
        latUs.push(Number(now() - t0) / 1000);
      }
      fs.closeSync(fd);
      return done(latUs.length, latUs.length * 256, latUs);
    }
    case 'buf256':
    case 'buf4k': {
      const size = workload === 'buf256' ? 256 : 4096;
      const fd = fs.openSync(path.join(dir, `${workload}-${id}.dat`), 'w');
      const chunk = Buffer.alloc(size, 0x42);
      let ops = 0;
      while ((ops & 255) !== 0 || now() < deadline) {
        fs.writeSync(fd, chunk);
        ops++;
      }
      fs.closeSync(fd);
      return done(ops, ops * size);
    }
    case 'seq1m': {
      const fd = fs.openSync(path.join(dir, `seq-${id}.dat`), 'w');
      const chunk = Buffer.alloc(2 ** 20, 0x43);
      let ops = 0;
      while (now() < deadline) {
        fs.writeSync(fd, chunk);
        ops++;
      }
      fs.fdatasyncSync(fd); // counted: the data is on disk when the run ends
      fs.closeSync(fd);
      return done(ops, ops * chunk.length);
    }
    case 'meta': {
      // Four operations per round: create (with 100 bytes), stat, rename, unlink.
      const d = path.join(dir, `meta-${id}`);
      fs.mkdirSync(d, { recursive: true });
      let ops = 0;
      for (let i = 0; now() < deadline; i++) {
        const a = path.join(d, `f${i}`);
        const b = path.join(d, `g${i}`);
        fs.writeFileSync(a, 'x'.repeat(100));
        fs.statSync(a);
        fs.renameSync(a, b);
        fs.unlinkSync(b);
        ops += 4;
      }
      fs.rmdirSync(d);
      return done(ops, 0);
    }
    case 'readseq':
    case 'readrand': {
      const fd = fs.openSync(path.join(dir, READ_FILE), 'r');
      const size = workload === 'readseq' ? 2 ** 20 : 4096;
      const buf = Buffer.alloc(size);
      const blocks = READ_BYTES / size;
      let ops = 0;
      let seed = id + 1;
      while (now() < deadline) {
        // 32-bit integer arithmetic: as a float product the LCG lost its low bits and cycled through about 11,000
        // states (runs up to 2026-12-06 16:20); its high bits pick the block.
        seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff;
        const block = workload === 'readseq' ? ops % blocks : Math.floor((seed / 2 ** 31) * blocks);
        fs.readSync(fd, buf, 0, size, block * size);
        ops++;
      }
      fs.closeSync(fd);
      return done(ops, ops * size);
    }
  }
}

if (process.argv[1] && import.meta.url.endsWith(path.basename(process.argv[1]))) {
  const [workload, dir, seconds, id] = process.argv.slice(2);
  // Started, then held until the parent lets every worker of the run go at once (see runWorkers): their loops
  // overlap however long the processes took to start.
  fs.writeSync(1, 'ready\n');
  fs.readSync(0, Buffer.alloc(1));
  process.stdout.write(JSON.stringify(run(workload as Workload, dir!, Number(seconds), Number(id ?? 0))) + '\n');
}
