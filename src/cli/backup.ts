// `drms backup`: accept the primary's stream and apply it to the target directory; promoted, become the primary.
import fs from 'node:fs';
import path from 'node:path';
import { BackupServer } from '../apply/server.js';
import { ConfigError } from '../errors.js';
import { promote, writeGeneration } from '../failover/generation.js';
import { listQuarantines } from '../failover/quarantine.js';
import type { Mounted } from '../fs/mount.js';
import { Policy } from '../policy/policy.js';
import { parseHostPort } from '../ship/routes.js';
import { loadCredentials } from '../wire/auth.js';
import type { TlsFiles } from '../wire/tls.js';
import { milliseconds, niceness, PRIMARY_DEFAULTS, type ConsoleFlags } from './flags.js';
import { SiteNode, type Role } from './node.js';
import { setThreadNice } from './process.js';
import { settingsOf, startPrimaryRole, type PrimaryArgs } from './primary.js';
import { diskFree, type NodeReport } from './report.js';

export interface BackupArgs extends TlsFiles, ConsoleFlags {
  listen: string;
  target: string;
  state: string;
  secretFile?: string;
  /** Where to ship once promoted (drms promote may give it instead). */
  to?: string;
  /** The mode and policy of the primary this site becomes when promoted. */
  mode?: string;
  policy?: string;
  /** Milliseconds applied plain writes may wait for the redo log's flush (see FLUSH_DELAY_MS). */
  flushDelay?: string;
  /** The JavaScript thread's nice value (setThreadNice). */
  nice?: string;
}

export async function runBackup(args: BackupArgs): Promise<void> {
  parseHostPort(args.listen, '--listen', true);
  loadCredentials(args);
  const node = await SiteNode.open(args.state, 'backup', args);
  await node.serve(await startBackupRole(node, args));
}

/**
 * The backup: applies the primary's stream to the target. `mounted`: this site was the primary until a switchover;
 * its mount stays, read-only, and the stream is applied beneath it. `primaryArgs`: the flags it serves with when
 * promoted again (otherwise they come from the backup's own flags).
 */
export async function startBackupRole(node: SiteNode, args: BackupArgs, opts: { mounted?: Mounted; primaryArgs?: PrimaryArgs } = {}): Promise<Role> {
  const listen = parseHostPort(args.listen, '--listen', true);
  const credentials = loadCredentials(args);
  const { stateDir, events, activity, log } = node;
  const mounted = opts.mounted;
  let target: string;
  if (mounted) {
    target = mounted.root;
  } else {
    fs.mkdirSync(args.target, { recursive: true });
    target = fs.realpathSync(args.target);
    if (!fs.statSync(target).isDirectory()) throw new ConfigError(`--target ${target} is not a directory`);
  }
  const targetDir = mounted?.dir ?? target;
  if (inside(stateDir, targetDir) || inside(targetDir, stateDir)) throw new ConfigError('--state and --target must not contain each other');

  let server: BackupServer | undefined;
  const startedAt = new Date().toISOString();
  // The backup has no policy: its classes are the built-in ones, by name.
  const classes = Policy.everything();
  const status = (): NodeReport => ({
    role: 'backup', state: stateDir, running: true, pid: process.pid, startedAt, target: targetDir, listen: args.listen,
    epoch: server?.generation.epoch, peerEpoch: server?.peerEpoch, readOnly: mounted?.readOnlyReason, quarantines: listQuarantines(stateDir),
    connected: server?.peer !== undefined, peer: server?.peer, lastError: server?.lastError,
    journalId: server?.journalId, appliedSeq: server?.appliedSeq ?? 0, divergences: server?.applier.divergences ?? 0,
    applyingSeconds: server?.applyingSince ? (Date.now() - server.applyingSince) / 1000 : 0,
    diskFreeBytes: diskFree(targetDir), eventCounts: events.counts, events: events.recent(20),
  });

  /**
   * Takes over as primary: the next epoch is recorded durably first, so that from then on this site's address
   * refuses the old primary (fencing) and tells it why; then the DR copy is mounted with a new journal.
   */
  const takeOver = async (epoch: number | undefined, given: { to?: string; mount?: string }) => {
    const s = server!;
    const pargs: PrimaryArgs = opts.primaryArgs
      ? { ...opts.primaryArgs, ...(given.to && { to: given.to }) }
      : { ...PRIMARY_DEFAULTS, ...args, mode: args.mode ?? PRIMARY_DEFAULTS.mode, mount: targetDir, to: given.to ?? args.to ?? '' };
    if (!pargs.to) throw new ConfigError('no address to ship to once primary: give drms promote --to HOST:PORT, or start the backup with --to');
    if (given.mount && path.resolve(given.mount) !== path.resolve(targetDir)) {
      throw new ConfigError(`--mount ${given.mount} is not this backup's DR copy (${targetDir}): the new primary mounts over the DR copy`);
    }
    settingsOf(pargs); // refused before anything changes
    // What is applied to the files is durable, and is what the new lineage records (a switchover's Promote was
    // answered after a checkpoint already, inside the batch stream).
    if (epoch === undefined) await s.flushed();
    const applied = s.appliedState;
    if (applied.resyncing) throw new ConfigError('this backup is inside the primary\'s initial copy: its tree is not a consistent copy yet, and cannot take over');
    const next = promote(s.generation, applied);
    if (epoch !== undefined && next.epoch !== epoch) throw new ConfigError(`asked to take over at epoch ${epoch}, but the next epoch here is ${next.epoch}`);
    writeGeneration(stateDir, next);
    s.generation = next;
    s.fence(next.epoch, `this site was promoted to primary at epoch ${next.epoch} on ${new Date().toISOString()}; it no longer accepts a primary's stream`, epoch === undefined);
    events.emit('promoted', `promoted to primary at epoch ${next.epoch} (applied seq ${applied.appliedSeq} of journal ${applied.journalId ?? 'none'}); mounting ${targetDir}`,
      { epoch: next.epoch, seq: applied.appliedSeq, journalId: applied.journalId, path: targetDir }, 'warn');
    // A site demoted by a switchover still has its read-only mount: the new primary mounts afresh, with its own journal.
    await mounted?.unmount();
    const primary = await startPrimaryRole(node, pargs, { listener: s });
    await node.serve(primary);
    return { epoch: next.epoch, journalId: primary.journalId, mount: targetDir };
  };

  process.umask(0);
  const flushDelayMs = args.flushDelay === undefined ? undefined : milliseconds(args.flushDelay, '--flush-delay');
  const nice = niceness(args.nice ?? PRIMARY_DEFAULTS.nice, '--nice');
  server = new BackupServer({ listen, target, stateDir, ...credentials, activity, events, log, flushDelayMs, onPromote: (epoch) => takeOver(epoch, {}) });
  await server.recover();
  const addr = await server.listen().catch((err: Error) => {
    throw new ConfigError(`cannot listen on ${args.listen}: ${err.message}`);
  });
  setThreadNice(nice, log);
  log.info({ listen: `${addr.address}:${addr.port}`, path: targetDir, nice, seq: server.appliedSeq, epoch: server.generation.epoch }, 'backup listening');
  const s = server;
  return {
    name: 'backup',
    status,
    classify: (p) => classes.place(p, false).cls.name,
    commands: {
      promote: async (req) => {
        await s.flushed(); // the redo log is the backup's: the primary's mount must find everything in the files
        return takeOver(undefined, { to: req.to, mount: req.mount });
      },
    },
    async stop() {
      await s.close();
      if (!mounted) return;
      await mounted.unmount();
      fs.rmSync(path.join(stateDir, 'primary.pid'), { force: true }); // the primary's, kept while its mount was served
    },
  };
}

function inside(child: string, parent: string): boolean {
  return child === parent || child.startsWith(parent + path.sep);
}
