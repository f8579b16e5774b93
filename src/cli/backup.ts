// `drms backup`: accept the primary's stream and apply it to the target directory.
import fs from 'node:fs';
import path from 'node:path';
import { writeStatus, readStatus } from '../admin/status.js';
import { BackupServer } from '../apply/server.js';
import { ConfigError } from '../errors.js';
import { createLogger } from '../log.js';
import { parseHostPort } from '../ship/routes.js';
import { readSecretFile } from '../wire/auth.js';
import { onShutdown, prepareStateDir, throttle } from './process.js';

export interface BackupArgs {
  listen: string;
  target: string;
  state: string;
  secretFile: string;
}

export async function runBackup(args: BackupArgs): Promise<void> {
  const listen = parseHostPort(args.listen, '--listen', true);
  const secret = readSecretFile(args.secretFile);
  const stateDir = prepareStateDir(args.state);
  const running = readStatus(stateDir);
  if (running?.running && running.pid !== process.pid) throw new ConfigError(`another drms process (pid ${running.pid}) uses --state ${stateDir}`);
  fs.mkdirSync(args.target, { recursive: true });
  const target = fs.realpathSync(args.target);
  if (!fs.statSync(target).isDirectory()) throw new ConfigError(`--target ${target} is not a directory`);
  if (inside(stateDir, target) || inside(target, stateDir)) throw new ConfigError('--state and --target must not contain each other');

  process.umask(0);
  const log = createLogger('backup');
  const startedAt = new Date().toISOString();
  const status = throttle(() =>
    writeStatus(stateDir, {
      role: 'backup',
      startedAt,
      target,
      listen: args.listen,
      connected: server.peer !== undefined,
      peer: server.peer,
      lastError: server.lastError,
      divergences: server.applier.divergences,
    }), 250);
  const server: BackupServer = new BackupServer({ listen, target, stateDir, secret, log, onChange: () => status() });
  const addr = await server.listen().catch((err: Error) => {
    throw new ConfigError(`cannot listen on ${args.listen}: ${err.message}`);
  });
  log.info({ listen: `${addr.address}:${addr.port}`, path: target, seq: server.appliedSeq }, 'backup listening');
  status();
  const heartbeat = setInterval(status, 1000);
  onShutdown(log, async () => {
    clearInterval(heartbeat);
    await server.close();
    status.now();
  });
}

function inside(child: string, parent: string): boolean {
  return child === parent || child.startsWith(parent + path.sep);
}
