// `drms backup`: accept the primary's stream and apply it to the target directory.
import fs from 'node:fs';
import path from 'node:path';
import { serveControl } from '../admin/control.js';
import { BackupServer } from '../apply/server.js';
import { ConfigError } from '../errors.js';
import { createLogger } from '../log.js';
import { parseHostPort } from '../ship/routes.js';
import { loadCredentials } from '../wire/auth.js';
import type { TlsFiles } from '../wire/tls.js';
import { onShutdown, prepareStateDir } from './process.js';
import type { NodeReport } from './report.js';

export interface BackupArgs extends TlsFiles {
  listen: string;
  target: string;
  state: string;
  secretFile?: string;
}

export async function runBackup(args: BackupArgs): Promise<void> {
  const listen = parseHostPort(args.listen, '--listen', true);
  const credentials = loadCredentials(args);
  const stateDir = prepareStateDir(args.state);
  fs.mkdirSync(args.target, { recursive: true });
  const target = fs.realpathSync(args.target);
  if (!fs.statSync(target).isDirectory()) throw new ConfigError(`--target ${target} is not a directory`);
  if (inside(stateDir, target) || inside(target, stateDir)) throw new ConfigError('--state and --target must not contain each other');

  const log = createLogger('backup');
  let server: BackupServer | undefined;
  const startedAt = new Date().toISOString();
  const control = await serveControl(stateDir, {
    status: (): NodeReport => ({
      role: 'backup', state: stateDir, running: true, pid: process.pid, startedAt, target, listen: args.listen,
      connected: server?.peer !== undefined, peer: server?.peer, lastError: server?.lastError,
      journalId: server?.journalId, appliedSeq: server?.appliedSeq ?? 0, divergences: server?.applier.divergences ?? 0,
    }),
  }, log);

  process.umask(0);
  server = new BackupServer({ listen, target, stateDir, ...credentials, log });
  const s = server;
  const addr = await server.listen().catch((err: Error) => {
    throw new ConfigError(`cannot listen on ${args.listen}: ${err.message}`);
  });
  log.info({ listen: `${addr.address}:${addr.port}`, path: target, seq: server.appliedSeq }, 'backup listening');
  onShutdown(log, async () => {
    await s.close();
    control.close();
  });
}

function inside(child: string, parent: string): boolean {
  return child === parent || child.startsWith(parent + path.sep);
}
