#!/usr/bin/env -S node --initial-old-space-size=128
// The `drms` command: parses flags and hands each subcommand to its module.
// V8's flags ride on the shebang (V8 sizes its heap before any code runs, and NODE_OPTIONS refuses this one), so every
// launcher runs this file itself: with a 25 MB old-space floor, a young generation grown to 16 MB under a high
// allocation rate kept V8 marking the old space, a full collection every 100 ms of a 10 MB heap (docs/performance-log.md).
import './threadpool.js';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';
import { ask, type ControlRequest } from '../admin/control.js';
import { DrmsError } from '../errors.js';
import { activityReport, reportCsv, reportText } from './activity-report.js';
import { FLUSH_DELAY_MS } from '../apply/server.js';
import { runBackup } from './backup.js';
import { BINDINGS } from '../fs/binding.js';
import { duration, PRIMARY_DEFAULTS } from './flags.js';
import { runPrimary } from './primary.js';
import { formatListing, listRecords } from './records.js';
import { checkSet, findSets } from './sets.js';
import { formatReport, nodeReport, waitForSync } from './report.js';
import { formatVerify, runVerify } from './verify.js';

/** The operator's console flags, the same on primary and backup. */
function withConsole(cmd: Command): Command {
  return cmd
    .option('--admin <[host:]port>', 'serve the dashboard, JSON API and /metrics here (loopback unless a host is given)')
    .option('--admin-token-file <file>', 'bearer token for the admin endpoint (mode 600; created when absent)', undefined)
    .option('--alert-command <command>', 'run (sh -c) when an alert fires or resolves: DRMS_ALERT, DRMS_ALERT_STATE, DRMS_ALERT_MESSAGE, JSON on stdin')
    .option('--alert-webhook <url>', 'POST each alert as JSON to this URL')
    .option('--alert-lag <seconds>', 'alert when replication lag passes this', PRIMARY_DEFAULTS.alertLag)
    .option('--alert-backlog <size>', 'alert when the unapplied journal passes this (e.g. 1G)', PRIMARY_DEFAULTS.alertBacklog)
    .option('--alert-disconnected <seconds>', 'alert when primary and backup have been apart this long', PRIMARY_DEFAULTS.alertDisconnected)
    .option('--alert-stuck <seconds>', 'watchdog: alert when an operation on the mount, an apply, or a connected replication makes no progress this long', PRIMARY_DEFAULTS.alertStuck);
}

const program = new Command('drms')
  .description('Disaster-recovery mirroring: capture every change on the primary, apply it in order on the backup')
  .showHelpAfterError();

withConsole(program.command('primary'))
  .description('mount over DIR, journal every change and ship it to the backup; SIGHUP reloads the configuration')
  .option('--config <file>', 'take the settings from a set in this config file (JSON) instead of flags; read again on SIGHUP')
  .option('--set <name>', 'with --config: which set (needed when the file holds several)')
  .option('--mount <dir>', 'production directory to mount over (it stays in place)')
  .option('--state <dir>', 'journal and status directory (outside --mount)')
  .option('--to <host:port,...>', 'backup address(es), preferred first')
  .option('--secret-file <file>', 'shared secret (mode 600)')
  .option('--tls-cert <file>', 'this side\'s certificate (PEM), for mutual TLS')
  .option('--tls-key <file>', 'its private key (PEM, mode 600)')
  .option('--tls-ca <file>', 'the CA that signs the other side\'s certificate')
  .addOption(new Option('--mode <mode>', 'async: never wait for the network; sync: fsync and close wait for the backup').choices(['async', 'sync']).default(PRIMARY_DEFAULTS.mode))
  .option('--sync-timeout <seconds>', 'sync mode: how long fsync/close wait for the backup', PRIMARY_DEFAULTS.syncTimeout)
  .addOption(new Option('--on-sync-timeout <policy>', 'sync mode, backup silent past the timeout: degrade to async (loud alert) or fail the call with EIO').choices(['degrade', 'fail']).default(PRIMARY_DEFAULTS.onSyncTimeout))
  .option('--drain-timeout <seconds>', 'on shutdown: how long to keep shipping the backlog', PRIMARY_DEFAULTS.drainTimeout)
  .option('--max-backlog <size>', 'unapplied journal size at which writers wait for the backup (e.g. 512M, 8G; 0: no cap)', PRIMARY_DEFAULTS.maxBacklog)
  .option('--policy <file>', 'critical-file policy (YAML or JSON): include/exclude globs and classes; without it everything is mirrored')
  .option('--verify-every <duration>', 'compare primary and backup on a schedule (e.g. 30m, 6h, 1d); the result is in status')
  .option('--listen <host:port>', 'where this site serves as the backup after a planned switchover (drms switchover)')
  .addOption(new Option('--binding <name>', 'FUSE binding: native (drms\'s libfuse3 addon) or fuse-native (libfuse2)').choices([...BINDINGS]))
  .option('--writeback-cache', 'native binding: the kernel buffers small writes and sends them in large ones (captured at flush, fsync and close)')
  .option('--no-io-uring', 'native binding: serve every request through /dev/fuse, not over io_uring on the requester\'s CPU (Linux 6.14+)')
  .option('--nice <n>', 'nice value of the JavaScript thread, which ships (the FUSE threads keep theirs): -20 to 19', PRIMARY_DEFAULTS.nice)
  .action((o) => runPrimary(o));

withConsole(program.command('backup'))
  .description('receive the primary\'s journal and apply it to the target directory')
  .requiredOption('--listen <host:port>', 'address to listen on')
  .requiredOption('--target <dir>', 'the DR copy')
  .requiredOption('--state <dir>', 'applied-seq and status directory (outside --target)')
  .option('--secret-file <file>', 'shared secret (mode 600)')
  .option('--tls-cert <file>', 'this side\'s certificate (PEM), for mutual TLS')
  .option('--tls-key <file>', 'its private key (PEM, mode 600)')
  .option('--tls-ca <file>', 'the CA that signs the other side\'s certificate')
  .option('--to <host:port,...>', 'once promoted (drms promote, drms switchover): the old primary site\'s backup address(es)')
  .addOption(new Option('--mode <mode>', 'once promoted: replication mode').choices(['async', 'sync']))
  .option('--policy <file>', 'once promoted: critical-file policy')
  .option('--flush-delay <ms>', 'how long applied writes may wait for the DR copy\'s flush (their durable acknowledgement) when the primary does not wait for it; 0: flush every group', String(FLUSH_DELAY_MS))
  .option('--nice <n>', 'nice value of the JavaScript thread, which applies and acknowledges: -20 to 19', PRIMARY_DEFAULTS.nice)
  .action((o) => runBackup(o));

program
  .command('promote')
  .description('emergency failover: the running backup takes over at the next epoch (the old primary is fenced) and mounts the DR copy as the primary')
  .requiredOption('--state <dir>', "the backup's state directory")
  .option('--mount <dir>', 'the directory to mount over: must be the backup\'s DR copy (checked)')
  .option('--to <host:port,...>', 'where the new primary ships (the old primary site, rejoining as backup); default: the backup\'s --to')
  .option('--timeout <seconds>', 'give up waiting for the answer after this long (exit 1)', '60')
  .action(async (o: { state: string; mount?: string; to?: string; timeout: string }) => {
    const r = await askNode(o.state, { cmd: 'promote', mount: o.mount, to: o.to }, Number(o.timeout) * 1000);
    process.stdout.write(`drms promote: this site is the primary at epoch ${String(r.epoch)}; ${String(r.mount)} is mounted, journal ${String(r.journalId)}\n`);
  });

program
  .command('switchover')
  .description('planned switchover, run on the primary: hold writers, drain, let the backup take over, and serve as its backup (mount read-only)')
  .requiredOption('--state <dir>', "the primary's state directory")
  .option('--timeout <seconds>', 'how long draining and the backup\'s take-over may last before it is abandoned (nothing changes then)', '60')
  .option('--json', 'machine-readable output')
  .action(async (o: { state: string; timeout: string; json?: boolean }) => {
    const timeoutMs = Number(o.timeout) * 1000;
    const r = await askNode(o.state, { cmd: 'switchover', timeoutMs }, 2 * timeoutMs + 30_000);
    process.stdout.write(o.json ? JSON.stringify(r, null, 2) + '\n'
      : `drms switchover: the backup is the primary at epoch ${String(r.epoch)} (journal ${String(r.newJournalId)}); applications paused ${String(r.pauseMs)} ms; this site is its backup on ${String(r.listen)}\n`);
  });

program
  .command('sync')
  .description('wait until the backup has applied everything journaled before this call')
  .requiredOption('--state <dir>', "the primary's state directory")
  .option('--timeout <seconds>', 'give up after this long (exit 1)', '60')
  .action(async (o: { state: string; timeout: string }) => {
    const r = await waitForSync(o.state, Number(o.timeout) * 1000);
    (r.ok ? process.stdout : process.stderr).write(`drms sync: ${r.message}\n`);
    process.exitCode = r.ok ? 0 : 1;
  });

program
  .command('status')
  .description('role, connection, journaled and applied seq, lag')
  .requiredOption('--state <dir>', 'a primary or backup state directory')
  .option('--json', 'machine-readable output')
  .action(async (o: { state: string; json?: boolean }) => {
    const r = await nodeReport(o.state);
    process.stdout.write((o.json ? JSON.stringify(r, null, 2) : formatReport(r)) + '\n');
  });

program
  .command('verify')
  .description('compare the primary and backup trees by content hash while mirroring runs; exit 0 identical, 1 drift found')
  .requiredOption('--state <dir>', "the running primary's state directory")
  .option('--repair', 'copy every difference to the backup again')
  .option('--json', 'machine-readable output')
  .option('--timeout <seconds>', 'give up after this long (exit 2)', '3600')
  .action(async (o: { state: string; repair?: boolean; json?: boolean; timeout: string }) => {
    const r = await runVerify(o.state, o.repair === true, Number(o.timeout) * 1000);
    process.stdout.write((o.json ? JSON.stringify(r, null, 2) : formatVerify(r)) + '\n');
    process.exitCode = r.identical ? 0 : 1;
  });

program
  .command('report')
  .description('what a primary journaled or a backup applied over a time window: for the node and, with --files, per file')
  .requiredOption('--state <dir>', 'a primary or backup state directory (running or stopped)')
  .option('--since <duration>', 'the window, back from now (e.g. 30m, 24h, 7d; kept for 7 days)', '24h')
  .option('--files', 'one row per file')
  .addOption(new Option('--format <format>', 'output').choices(['text', 'json', 'csv']).default('text'))
  .action(async (o: { state: string; since: string; files?: boolean; format: string }) => {
    const r = await activityReport(o.state, duration(o.since, '--since'), o.files === true);
    process.stdout.write((o.format === 'json' ? JSON.stringify(r, null, 2) : o.format === 'csv' ? reportCsv(r) : reportText(r)) + '\n');
  });

program
  .command('sets')
  .description('list the mirrored sets of config files (tab-separated: name, config file, mount, state), for the mount scripts')
  .option('--config <file|dir>', 'a config file, or a directory of *.json config files', '/etc/drms')
  .option('--set <name...>', 'only these sets')
  .option('--check', 'also run the checks made before mounting; exit 1 if one fails')
  .action(async (o: { config: string; set?: string[]; check?: boolean }) => {
    const refs = findSets(o.config, o.set ?? []);
    let failed = false;
    for (const ref of refs) {
      if (o.check) {
        const { fatal, warnings } = await checkSet(ref);
        for (const w of warnings) process.stderr.write(`drms: ${ref.set.name}: warning: ${w}\n`);
        for (const f of fatal) process.stderr.write(`drms: ${ref.set.name}: ${f}\n`);
        failed ||= fatal.length > 0;
      }
      process.stdout.write([ref.set.name, ref.file, path.resolve(ref.set.mount), path.resolve(ref.set.state)].join('\t') + '\n');
    }
    process.exitCode = failed ? 1 : 0;
  });

program
  .command('records')
  .description('list the records of a VOS record file (either site); exit 1 if the file is damaged')
  .argument('<file>', 'a file with a user.vos.organization attribute')
  .option('--json', 'machine-readable output (record data in base64, and as text when printable)')
  .action(async (file: string, o: { json?: boolean }) => {
    const l = await listRecords(file);
    process.stdout.write((o.json ? JSON.stringify(l, null, 2) : formatListing(l)) + '\n');
    process.exitCode = l.damage ? 1 : 0;
  });

program
  .command('keygen')
  .description('write a new random shared secret (mode 600)')
  .requiredOption('--out <file>', 'where to write it; an existing file is not overwritten')
  .action((o: { out: string }) => {
    fs.writeFileSync(o.out, randomBytes(32).toString('base64url') + '\n', { mode: 0o600, flag: 'wx' });
  });

/** One control request to the node on `state`; its refusal is an error (exit 1), no node an error too. */
async function askNode(state: string, req: ControlRequest, timeoutMs: number): Promise<Record<string, unknown>> {
  const r = await ask(path.resolve(state), req, timeoutMs);
  if (!r) throw new Error(`no drms process is running with --state ${state}`);
  if (typeof r.error === 'string') throw new Error(`${req.cmd}: ${r.error}`);
  return r;
}

program.parseAsync().catch((err: unknown) => {
  const msg = err instanceof Error ? err.message : String(err);
  process.stderr.write(`drms: ${msg}\n`);
  process.exit(err instanceof DrmsError ? 2 : 1);
});
