// `npm run soak -- --minutes N`: a mixed workload on a primary and backup for N minutes with a fault every
// minute (backup SIGKILLed and restarted, network cut, primary restarted). Samples RSS, open files, backlog and
// lag of both processes every 10 s, checks the trees are identical at the end, and reports whether they stayed flat.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { ask } from '../../dist/admin/control.js';
import type { NodeReport } from '../../dist/cli/report.js';
import { cleanup, DRMS, shutdown, startDrms } from './procs.js';

const run = promisify(execFile);
const { values: args } = parseArgs({ options: { minutes: { type: 'string', default: '10' }, out: { type: 'string', default: path.resolve(import.meta.dirname, '../../bench-results') } } });
const MINUTES = Number(args.minutes);

/** Appends with fsync to a few logs, rewrites a table, creates, renames and deletes small files: forever. It
 * keeps no file or directory open between steps, so the primary can be restarted under it. */
const WORKLOAD = `
  i=0
  while :; do
    i=$((i + 1))
    for f in atm card pos; do echo "$f txn $i $(date +%s%N)" >> "$D/$f.log"; done
    sync "$D/atm.log"
    printf 'rate=%s\\n' "$i" > "$D/rates.tmp" && mv "$D/rates.tmp" "$D/rates.table"
    echo "macro $i" > "$D/m$((i % 50)).cm"
    [ $((i % 7)) = 0 ] && rm -f "$D/m$(((i + 25) % 50)).cm"
    [ $((i % 500)) = 0 ] && for f in atm card pos; do : > "$D/$f.log"; done
    sleep 0.01
  done
`;

interface Sample {
  t: number;
  primaryRssMiB: number;
  backupRssMiB: number;
  primaryFds: number;
  backupFds: number;
  backlogBytes: number;
  lagOps: number;
  lagSeconds: number;
  fault?: string;
}

const rssMiB = (pid: number | undefined) => {
  const m = pid ? /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8')) : null;
  return m ? Number(m[1]) / 1024 : NaN;
};
const fds = (pid: number | undefined) => (pid ? fs.readdirSync(`/proc/${pid}/fd`).length : NaN);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

async function main(): Promise<void> {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'drms-soak-'));
  cleanup.push(async () => fs.rmSync(base, { recursive: true, force: true }));
  const [prod, dr, pstate, bstate] = ['prod', 'dr', 'pstate', 'bstate'].map((d) => path.join(base, d)) as [string, string, string, string];
  fs.mkdirSync(prod);
  const secret = path.join(base, 'secret');
  fs.writeFileSync(secret, randomBytes(24).toString('hex'), { mode: 0o600 });
  cleanup.push(async () => void (await run('fusermount', ['-uz', prod]).catch(() => undefined)));

  const backupArgs = ['backup', '--listen', '127.0.0.1:0', '--target', dr, '--state', bstate, '--secret-file', secret];
  let backup = await startDrms(backupArgs, 'backup listening');
  const port = Number(String(backup.line.listen).split(':').pop());
  backupArgs[2] = `127.0.0.1:${port}`; // restarts listen where the primary looks
  const primaryArgs = ['primary', '--mount', prod, '--state', pstate, '--to', `127.0.0.1:${port}`, '--secret-file', secret];
  let primary = await startDrms(primaryArgs, 'mounted');
  const workload: ChildProcess = spawn('bash', ['-c', WORKLOAD], { cwd: base, stdio: 'ignore', env: { ...process.env, D: prod } });
  cleanup.push(async () => void workload.kill());

  const faults = [
    async () => {
      backup.proc.kill('SIGKILL');
      await new Promise((r) => backup.proc.once('exit', r));
      await new Promise((r) => setTimeout(r, 5000));
      backup = await startDrms(backupArgs, 'backup listening');
      return 'backup SIGKILLed, restarted after 5 s';
    },
    async () => {
      backup.proc.kill('SIGSTOP');
      await new Promise((r) => setTimeout(r, 8000));
      backup.proc.kill('SIGCONT');
      return 'backup frozen for 8 s (a silent network)';
    },
    async () => {
      // Paused between steps, the workload holds nothing open on the mount.
      workload.kill('SIGSTOP');
      primary.proc.kill('SIGTERM');
      await new Promise((r) => primary.proc.once('exit', r));
      primary = await startDrms(primaryArgs, 'mounted');
      workload.kill('SIGCONT');
      return 'primary restarted (SIGTERM, start)';
    },
  ];

  const samples: Sample[] = [];
  const started = Date.now();
  let nextFault = 0;
  let lastFault = Date.now();
  while (Date.now() - started < MINUTES * 60_000) {
    let fault: string | undefined;
    if (Date.now() - lastFault >= 60_000) {
      fault = await faults[nextFault++ % faults.length]!();
      lastFault = Date.now();
    }
    const s = await ask<NodeReport>(pstate, { cmd: 'status' }, 5000).catch(() => undefined);
    samples.push({
      t: Math.round((Date.now() - started) / 1000),
      primaryRssMiB: rssMiB(primary.proc.pid), backupRssMiB: rssMiB(backup.proc.pid),
      primaryFds: fds(primary.proc.pid), backupFds: fds(backup.proc.pid),
      backlogBytes: s?.backlogBytes ?? NaN, lagOps: s?.lagOps ?? NaN, lagSeconds: s?.lagSeconds ?? NaN, fault,
    });
    const last = samples[samples.length - 1]!;
    process.stdout.write(`${String(last.t).padStart(5)} s  RSS ${last.primaryRssMiB.toFixed(0)}/${last.backupRssMiB.toFixed(0)} MiB  fds ${last.primaryFds}/${last.backupFds}  backlog ${(last.backlogBytes / 1024).toFixed(0)} KiB  lag ${last.lagOps} ops ${last.lagSeconds.toFixed(2)} s${fault ? `  <- ${fault}` : ''}\n`);
    await new Promise((r) => setTimeout(r, 10_000));
  }
  workload.kill();
  await new Promise((r) => workload.once('exit', r));
  await run(DRMS, ['sync', '--state', pstate, '--timeout', '120']);
  const verify = await run(DRMS, ['verify', '--state', pstate]).then((r) => r.stdout.trim(), (e: { stdout: string }) => e.stdout.trim());

  // Flat: the last third of the run against the middle third (the first holds warm-up).
  const third = Math.floor(samples.length / 3);
  const [mid, end] = [samples.slice(third, 2 * third), samples.slice(2 * third)];
  const growth = (k: keyof Sample) => mean(end.map((x) => x[k] as number)) - mean(mid.map((x) => x[k] as number));
  const report = {
    minutes: MINUTES, faults: samples.filter((x) => x.fault).map((x) => `${x.t} s: ${x.fault}`), verify,
    growthLastThirdVsMiddle: { primaryRssMiB: growth('primaryRssMiB'), backupRssMiB: growth('backupRssMiB'), primaryFds: growth('primaryFds'), backupFds: growth('backupFds'), backlogBytes: growth('backlogBytes') },
    max: { primaryRssMiB: Math.max(...samples.map((x) => x.primaryRssMiB)), backupRssMiB: Math.max(...samples.map((x) => x.backupRssMiB)), lagSeconds: Math.max(...samples.map((x) => x.lagSeconds || 0)) },
    samples,
  };
  fs.mkdirSync(args.out!, { recursive: true });
  fs.writeFileSync(path.join(args.out!, 'soak.json'), JSON.stringify(report, null, 2));
  process.stdout.write(`\nverify: ${verify}\ngrowth, last third vs middle third: ${JSON.stringify(report.growthLastThirdVsMiddle)}\nmax: ${JSON.stringify(report.max)}\nreport: ${path.join(args.out!, 'soak.json')}\n`);
  if (!verify.startsWith('identical')) process.exitCode = 1;
}

process.on('SIGINT', () => void shutdown().then(() => process.exit(130)));
main().then(shutdown, async (err: unknown) => {
  process.stderr.write(`soak: ${(err as Error).stack ?? String(err)}\n`);
  await shutdown();
  process.exitCode = 1;
});
