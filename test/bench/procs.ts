// Processes of the benchmark and the soak: drms daemons started and awaited, and cleanup run at exit.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';

export const DRMS = path.resolve(import.meta.dirname, '../cli/main.js');

/** Run in reverse order at exit: stop daemons, unmount, remove temp dirs. */
export const cleanup: Array<() => Promise<void>> = [];

export async function shutdown(): Promise<void> {
  for (const c of cleanup.splice(0).reverse()) await c().catch(() => undefined);
}

/** Starts `drms <args>` and resolves once it logs `ready`; errors it logs are echoed to stderr. */
export async function startDrms(argv: string[], ready: string): Promise<{ proc: ChildProcess; line: Record<string, unknown> }> {
  const proc = spawn(DRMS, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  cleanup.push(async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
  });
  const line = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const onLine = (l: string) => {
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(l);
      } catch {
        return;
      }
      if (rec.msg === ready) resolve(rec);
      else if (Number(rec.level) >= 50) process.stderr.write(`drms ${argv[0]}: ${l}\n`);
    };
    createInterface({ input: proc.stdout! }).on('line', onLine);
    createInterface({ input: proc.stderr! }).on('line', onLine);
    proc.once('exit', (code) => reject(new Error(`drms ${argv[0]} exited (${code}) before "${ready}"`)));
  });
  return { proc, line };
}
