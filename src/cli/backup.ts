// `drms backup`: accept the primary's stream and apply it to the target directory.
import fs from 'node:fs';
import path from 'node:path';
import { Activity } from '../admin/activity.js';
import { startConsole } from '../admin/console.js';
import { serveControl } from '../admin/control.js';
import { EventLog } from '../admin/events.js';
import { BackupServer } from '../apply/server.js';
import { ConfigError } from '../errors.js';
import { createLogger } from '../log.js';
import { Policy } from '../policy/policy.js';
import { parseHostPort } from '../ship/routes.js';
import { loadCredentials } from '../wire/auth.js';
import type { TlsFiles } from '../wire/tls.js';
import { consoleOptions, type ConsoleFlags } from './flags.js';
import { onShutdown, prepareStateDir } from './process.js';
import { diskFree, type NodeReport } from './report.js';

export interface BackupArgs extends TlsFiles, ConsoleFlags {
  listen: string;
  target: string;
  state: string;
  secretFile?: string;
}

export async function runBackup(args: BackupArgs): Promise<void> {
  const listen = parseHostPort(args.listen, '--listen', true);
  const credentials = loadCredentials(args);
  const consoleOpts = consoleOptions(args);
  const stateDir = prepareStateDir(args.state);
  fs.mkdirSync(args.target, { recursive: true });
  const target = fs.realpathSync(args.target);
  if (!fs.statSync(target).isDirectory()) throw new ConfigError(`--target ${target} is not a directory`);
  if (inside(stateDir, target) || inside(target, stateDir)) throw new ConfigError('--state and --target must not contain each other');

  const log = createLogger('backup');
  let server: BackupServer | undefined;
  const startedAt = new Date().toISOString();
  const events = new EventLog(log);
  // The backup has no policy: its classes are the built-in ones, by name.
  const classes = Policy.everything();
  const activity = new Activity(stateDir, (p) => classes.place(p, false).cls.name);
  const status = (): NodeReport => ({
    role: 'backup', state: stateDir, running: true, pid: process.pid, startedAt, target, listen: args.listen,
    connected: server?.peer !== undefined, peer: server?.peer, lastError: server?.lastError,
    journalId: server?.journalId, appliedSeq: server?.appliedSeq ?? 0, divergences: server?.applier.divergences ?? 0,
    applyingSeconds: server?.applyingSince ? (Date.now() - server.applyingSince) / 1000 : 0,
    diskFreeBytes: diskFree(target), eventCounts: events.counts, events: events.recent(20),
  });
  const control = await serveControl(stateDir, { status, report: (req) => activity.report(req.since ?? 0, req.files === true) }, log);
  const nodeConsole = await startConsole('backup', stateDir, consoleOpts, { status, activity, events }, log);

  process.umask(0);
  server = new BackupServer({ listen, target, stateDir, ...credentials, activity, events, log });
  const s = server;
  const addr = await server.listen().catch((err: Error) => {
    throw new ConfigError(`cannot listen on ${args.listen}: ${err.message}`);
  });
  log.info({ listen: `${addr.address}:${addr.port}`, path: target, seq: server.appliedSeq }, 'backup listening');
  onShutdown(log, async () => {
    await s.close();
    control.close();
    await nodeConsole.close();
  });
}

function inside(child: string, parent: string): boolean {
  return child === parent || child.startsWith(parent + path.sep);
}
