// Alerts: a command and/or a webhook, run when a condition that needs a human starts (and when it ends): lag,
// backlog or disconnection past a threshold, writers held at the backlog cap, sync mode degraded, drift found.
import { spawn } from 'node:child_process';
import type { NodeReport } from '../cli/report.js';
import type { Logger } from '../log.js';
import type { DrmsEvent, EventLog } from './events.js';

export interface AlertOptions {
  command?: string;
  webhook?: string;
  lagSeconds: number;
  backlogBytes: number;
  disconnectedSeconds: number;
  /** Watchdog: an operation, an apply or a connected replication making no progress for this long. */
  stuckSeconds: number;
}

export interface Alert {
  alert: string;
  state: 'firing' | 'resolved';
  message: string;
  role: string;
  node: string;
  at: string;
  details?: Record<string, unknown>;
}

const CHECK_MS = 1000;
const RUN_TIMEOUT_MS = 10_000;

/** Conditions checked every second against status: each alerts when it becomes true and when it clears. */
const CONDITIONS: Array<{ alert: string; test: (s: NodeReport, o: AlertOptions, disconnectedFor: number) => string | undefined }> = [
  { alert: 'disconnected', test: (s, o, d) => (d >= o.disconnectedSeconds ? `no connection between primary and backup for ${Math.round(d)} s${s.lastError ? `: ${s.lastError}` : ''}` : undefined) },
  { alert: 'lag', test: (s, o) => ((s.lagSeconds ?? 0) > o.lagSeconds ? `replication lag ${(s.lagSeconds ?? 0).toFixed(1)} s (threshold ${o.lagSeconds} s)` : undefined) },
  { alert: 'backlog', test: (s, o) => ((s.backlogBytes ?? 0) > o.backlogBytes ? `journal backlog ${s.backlogBytes} bytes (threshold ${o.backlogBytes})` : undefined) },
  { alert: 'backlog-full', test: (s) => (s.backlogFull ? 'writers are held at the --max-backlog cap' : undefined) },
  // Watchdog: something that should finish in milliseconds has not.
  { alert: 'operation-stuck', test: (s, o) => ((s.operationSeconds ?? 0) > o.stuckSeconds ? `an operation on the mount has run for ${Math.round(s.operationSeconds!)} s: applications writing to it are blocked` : undefined) },
  { alert: 'replication-stalled', test: (s, o) => ((s.stalledSeconds ?? 0) > o.stuckSeconds ? `connected, ${s.lagOps} ops behind, and nothing applied for ${Math.round(s.stalledSeconds!)} s` : undefined) },
  { alert: 'apply-stuck', test: (s, o) => ((s.applyingSeconds ?? 0) > o.stuckSeconds ? `one batch has been applying for ${Math.round(s.applyingSeconds!)} s (a hung disk?)` : undefined) },
  { alert: 'disk-low', test: (s) => (s.diskFreeBytes !== undefined && s.diskFreeBytes < 1024 ** 3 ? `${(s.diskFreeBytes / 2 ** 20).toFixed(0)} MiB free on the ${s.role === 'primary' ? 'journal' : 'DR copy'}'s disk` : undefined) },
  { alert: 'fenced', test: (s) => (s.superseded ? `this primary was fenced by a site at epoch ${s.superseded.epoch}: its mount is read-only; rejoin it as a backup` : undefined) },
  { alert: 'sync-degraded', test: (s) => (s.syncDegraded ? 'sync mode has degraded to async: writes are not yet on the DR site when fsync returns' : undefined) },
];

export class Alerts {
  private readonly firing = new Set<string>();
  private disconnectedSince: number | undefined = Date.now();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly opts: AlertOptions, private readonly status: () => NodeReport, private readonly events: EventLog, private readonly log: Logger) {
    this.timer = setInterval(() => this.check(), CHECK_MS);
    this.timer.unref();
    events.subscribe((e) => this.onEvent(e));
  }

  close(): void {
    clearInterval(this.timer);
  }

  private check(): void {
    const s = this.status();
    if (s.connected) this.disconnectedSince = undefined;
    else this.disconnectedSince ??= Date.now();
    const disconnectedFor = this.disconnectedSince === undefined ? 0 : (Date.now() - this.disconnectedSince) / 1000;
    for (const c of CONDITIONS) {
      const message = c.test(s, this.opts, disconnectedFor);
      if (message && !this.firing.has(c.alert)) {
        this.firing.add(c.alert);
        this.raise(c.alert, 'firing', message);
      } else if (!message && this.firing.has(c.alert)) {
        this.firing.delete(c.alert);
        this.raise(c.alert, 'resolved', `${c.alert}: back to normal`);
      }
    }
  }

  private onEvent(e: DrmsEvent): void {
    if (e.kind === 'drift') this.raise('drift', 'firing', e.message, { differences: e.differences, first: e.first });
  }

  private raise(alert: string, state: Alert['state'], message: string, details?: Record<string, unknown>): void {
    const s = this.status();
    const a: Alert = { alert, state, message, role: s.role, node: s.mount ?? s.target ?? s.state, at: new Date().toISOString(), details };
    this.events.emit('alert', `ALERT ${alert} ${state}: ${message}`, { alert, state }, state === 'firing' ? 'error' : 'warn');
    if (this.opts.command) this.runCommand(this.opts.command, a);
    if (this.opts.webhook) this.post(this.opts.webhook, a);
  }

  /** The command runs with sh -c; the alert is in DRMS_ALERT* variables and as JSON on stdin. */
  private runCommand(command: string, a: Alert): void {
    const child = spawn('sh', ['-c', command], {
      stdio: ['pipe', 'ignore', 'pipe'],
      env: { ...process.env, DRMS_ALERT: a.alert, DRMS_ALERT_STATE: a.state, DRMS_ALERT_MESSAGE: a.message, DRMS_ROLE: a.role },
      timeout: RUN_TIMEOUT_MS,
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d).slice(-2000));
    child.stdin.on('error', () => undefined);
    child.stdin.end(JSON.stringify(a) + '\n');
    child.on('error', (err) => this.log.error({ err, alert: a.alert }, 'alert command could not run'));
    child.on('exit', (code) => {
      if (code !== 0) this.log.error({ alert: a.alert, code, stderr: stderr.trim() }, 'alert command failed');
    });
  }

  private post(url: string, a: Alert): void {
    fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(a), signal: AbortSignal.timeout(RUN_TIMEOUT_MS) })
      .then((res) => {
        if (!res.ok) this.log.error({ alert: a.alert, status: res.status, url }, 'alert webhook refused the alert');
      })
      .catch((err) => this.log.error({ err, alert: a.alert, url }, 'alert webhook unreachable'));
  }
}
