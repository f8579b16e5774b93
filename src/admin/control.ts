// The control socket (<state>/control.sock): how `drms status` and `drms sync` ask a running node.
// No other process opens a live journal: lmdb-js fails inside a writer's transaction when another process reads.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';

export interface ControlRequest {
  cmd: 'status' | 'sync' | 'verify' | 'report' | 'promote' | 'switchover';
  timeoutMs?: number;
  /** promote: where the new primary ships (instead of the backup's --to), and the directory it expects to mount. */
  to?: string;
  mount?: string;
  repair?: boolean;
  /** report: since when (ms since the epoch), and whether per file. */
  since?: number;
  files?: boolean;
}

export type ControlHandlers = Partial<Record<ControlRequest['cmd'], (req: ControlRequest) => unknown>>;

function socketPath(stateDir: string): string {
  return path.join(stateDir, 'control.sock');
}

/** Serves one JSON request per connection, one JSON answer back. Refuses to start if a live node owns the socket. */
export async function serveControl(stateDir: string, handlers: ControlHandlers, log: Logger): Promise<net.Server> {
  const file = socketPath(stateDir);
  if (await ask(stateDir, { cmd: 'status' }, 2000).catch(() => undefined)) {
    throw new ConfigError(`another drms process is running with --state ${stateDir}`, { path: stateDir });
  }
  fs.rmSync(file, { force: true });
  const server = net.createServer((socket) => {
    socket.on('error', () => socket.destroy());
    createInterface({ input: socket }).once('line', (line) => {
      void (async () => {
        let answer: unknown;
        try {
          const req = JSON.parse(line) as ControlRequest;
          const handler = handlers[req.cmd];
          answer = handler ? await handler(req) : { error: `unknown command ${String(req.cmd)}` };
        } catch (err) {
          answer = { error: (err as Error).message };
        }
        socket.end(JSON.stringify(answer) + '\n');
      })();
    });
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(file, resolve));
  fs.chmodSync(file, 0o600);
  server.on('error', (err) => log.error({ err, path: file }, 'control socket failed'));
  return server;
}

/** Asks the node that owns `stateDir`; undefined when none is running. */
export async function ask<T = Record<string, unknown>>(stateDir: string, req: ControlRequest, timeoutMs: number): Promise<T | undefined> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath(stateDir));
    const timer = setTimeout(() => socket.destroy(new Error(`no answer from the drms process on ${socketPath(stateDir)} within ${timeoutMs} ms`)), timeoutMs);
    let data = '';
    socket.on('data', (d) => (data += d));
    socket.on('connect', () => socket.write(JSON.stringify(req) + '\n'));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') resolve(undefined);
      else reject(err);
    });
    socket.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(data) as T);
      } catch {
        reject(new Error(`unreadable answer from the drms process on ${socketPath(stateDir)}`));
      }
    });
  });
}
