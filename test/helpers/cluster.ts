// Test harness: real drms processes on temp directories, real mounts, and cleanup that runs even when a test fails.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import type { Test } from 'tap';

const run = promisify(execFile);
export const DRMS = path.resolve(import.meta.dirname, '../../dist/cli/main.js');
/** The daemons run on drms's own binding (the default), not on fuse-native (DRMS_BINDING=fuse-native). */
export const NATIVE_BINDING = (process.env.DRMS_BINDING ?? 'native') === 'native';

export interface Node {
  proc: ChildProcess;
  logs: Array<Record<string, unknown>>;
  /** Resolves with the first log line whose msg matches, looking only at lines from index `from` on. */
  waitFor(msg: string | RegExp, timeoutMs?: number, from?: number): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
  /** Its last `n` log lines, and how it ended if it did: for a failure's message. */
  lastLines(n?: number): string;
}

/** Every process started and not yet reaped, with the mount it serves: stopped before any temp dir is removed. */
const live = new Set<() => Promise<void>>();

async function stopAll(): Promise<void> {
  for (const stop of [...live]) await stop();
}

export function tmpdir(t: Test, name = 'drms'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${name}-`));
  t.teardown(async () => {
    await stopAll();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** The usual directories of a primary/backup pair under a fresh temp dir (prod created), and a secret. */
export function layout(t: Test): { dir: string; prod: string; dr: string; pstate: string; bstate: string; secret: string } {
  const dir = tmpdir(t);
  const [prod, dr, pstate, bstate] = ['prod', 'dr', 'pstate', 'bstate'].map((d) => path.join(dir, d)) as [string, string, string, string];
  fs.mkdirSync(prod);
  return { dir, prod, dr, pstate, bstate, secret: writeSecret(dir) };
}

export function writeSecret(dir: string, name = 'secret'): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, randomBytes(24).toString('hex'), { mode: 0o600 });
  return file;
}

/** Starts `drms <args>` (as user `uid` if given); the process is killed (and its mount freed) in teardown. */
export function startNode(t: Test, args: string[], mountDir?: string, uid?: number): Node {
  const command = [DRMS, ...args]; // run as the installed command is: its shebang carries V8's flags
  if (uid !== undefined) command.unshift('setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups');
  const proc = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Array<Record<string, unknown>> = [];
  const waiters: Array<{ match: string | RegExp; resolve: (l: Record<string, unknown>) => void }> = [];
  const onLine = (line: string) => {
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(line);
    } catch {
      rec = { msg: line, raw: true };
    }
    logs.push(rec);
    if (process.env.DRMS_TEST_VERBOSE) console.error(`[${args[0]}] ${line}`);
    for (const w of [...waiters]) {
      const msg = String(rec.msg ?? '');
      if (typeof w.match === 'string' ? msg === w.match : w.match.test(msg)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(rec);
      }
    }
  };
  createInterface({ input: proc.stdout! }).on('line', onLine);
  createInterface({ input: proc.stderr! }).on('line', onLine);
  const exited = new Promise<number | null>((res) => proc.on('exit', (code) => res(code)));
  const stop = async () => {
    live.delete(stop);
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      // A node stuck in a request to its own mount exits only once that mount's connection is aborted.
      const gone = await Promise.race([exited.then(() => true), new Promise<false>((r) => setTimeout(r, 2000, false))]);
      if (!gone && mountDir) await freeMount(mountDir);
      await exited;
    }
    if (mountDir) await freeMount(mountDir);
  };
  live.add(stop);
  t.teardown(stop);
  const lastLines = (n = 8) => {
    const ended = proc.exitCode !== null || proc.signalCode !== null ? `(exited: ${proc.exitCode ?? proc.signalCode}) ` : '';
    return `${ended}last lines:\n${logs.slice(-n).map((l) => JSON.stringify(l)).join('\n')}`;
  };
  return {
    proc,
    logs,
    exited,
    lastLines,
    waitFor(match, timeoutMs = 15_000, from = 0) {
      const seen = logs.slice(from).find((l) => (typeof match === 'string' ? l.msg === match : match.test(String(l.msg ?? ''))));
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for log "${match}"; ${lastLines()}`)), timeoutMs);
        const w = { match, resolve: (l: Record<string, unknown>) => (clearTimeout(timer), resolve(l)) };
        waiters.push(w);
        void exited.then((code) => {
          if (waiters.includes(w)) {
            clearTimeout(timer);
            reject(new Error(`process exited (${code}) before logging "${match}"; ${lastLines()}`));
          }
        });
      });
    },
  };
}

export interface BackupNode extends Node {
  port: number;
}

/** A backup; its target is freed in teardown too (a promoted backup mounts over it). */
export async function startBackup(t: Test, opts: { target: string; state: string; secret: string; port?: number; extra?: string[] }): Promise<BackupNode> {
  const args = ['backup', '--listen', `127.0.0.1:${opts.port ?? 0}`, '--target', opts.target, '--state', opts.state, '--secret-file', opts.secret, ...(opts.extra ?? [])];
  const node = startNode(t, args, opts.target);
  const line = await node.waitFor('backup listening');
  return { ...node, port: Number(String(line.listen).split(':').pop()) };
}

export async function startPrimary(
  t: Test,
  opts: { mount: string; state: string; to: string; secret: string; mode?: string; extra?: string[] },
): Promise<Node> {
  const secretArgs = opts.secret ? ['--secret-file', opts.secret] : []; // '' : TLS alone
  const args = ['primary', '--mount', opts.mount, '--state', opts.state, '--to', opts.to, ...secretArgs, '--mode', opts.mode ?? 'async', ...(opts.extra ?? [])];
  const node = startNode(t, args, opts.mount);
  await node.waitFor('mounted');
  return node;
}

/** A backup on loopback and a primary mounted on the layout's `prod` that ships to it. */
export async function startPair(t: Test): Promise<ReturnType<typeof layout> & { primary: Node }> {
  const l = layout(t);
  const backup = await startBackup(t, { target: l.dr, state: l.bstate, secret: l.secret });
  const primary = await startPrimary(t, { mount: l.prod, state: l.pstate, to: `127.0.0.1:${backup.port}`, secret: l.secret });
  return { ...l, primary };
}

/**
 * A TCP port free on 127.0.0.1 right now, for a node that must listen on a known port later: picked below the
 * kernel's ephemeral range, from which the sockets of the test files running alongside take theirs (one took such a
 * port in between: EADDRINUSE).
 */
export async function freePort(): Promise<number> {
  const ephemeral = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').split(/\s+/)[0]) || 32768;
  const low = Math.max(1024, ephemeral - 12_000);
  for (;;) {
    const port = low + Math.floor(Math.random() * (ephemeral - low));
    const server = net.createServer();
    const free = await new Promise<boolean>((r) => server.once('error', () => r(false)).listen(port, '127.0.0.1', () => r(true)));
    if (!free) continue;
    await new Promise((r) => server.close(r));
    return port;
  }
}

/** Runs `drms <args>` to completion. */
export async function drms(args: string[], timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(DRMS, args, { timeout: timeoutMs });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** Runs a bash script in a child process (the mount is never touched from a process that serves it). */
export async function sh(script: string, cwd: string, timeoutMs = 120_000): Promise<string> {
  const { stdout } = await run('bash', ['-euo', 'pipefail', '-c', script], { cwd, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
  return stdout;
}

/** The mountinfo line for a mount point (never stats it: a dead mount answers ENOTCONN). */
function mountLine(dir: string): string | undefined {
  const abs = path.resolve(dir);
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === abs);
}

export function isMounted(dir: string): boolean {
  return mountLine(dir) !== undefined;
}

/** Frees a FUSE mount even when its server hangs: abort the connection, then lazy-unmount. */
export async function freeMount(dir: string): Promise<void> {
  const line = mountLine(dir);
  if (!line) return;
  const real = path.resolve(dir);
  const minor = line?.split(' ')[2]?.split(':')[1];
  await run('sh', ['-c', 'mountpoint -q /sys/fs/fuse/connections || mount -t fusectl none /sys/fs/fuse/connections']).catch(() => undefined);
  if (minor) await fs.promises.writeFile(`/sys/fs/fuse/connections/${minor}/abort`, '1').catch(() => undefined);
  await run('fusermount', ['-uz', real]).catch(() => undefined);
}

/** The errno code of a failed call, or 'ok'. */
export async function outcome(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
    return 'ok';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}
