// The operator's console of a node: activity sampling, metrics, the admin endpoint and alerts, started together.
import path from 'node:path';
import type { NodeReport } from '../cli/report.js';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Activity } from './activity.js';
import { Alerts, type AlertOptions } from './alerts.js';
import type { EventLog } from './events.js';
import { adminToken, parseAdminAddress, serveAdmin, type AdminServer } from './http.js';
import { createMetrics } from './metrics.js';

export interface ConsoleOptions {
  /** [HOST:]PORT of the admin endpoint; none without it. */
  admin?: string;
  adminTokenFile?: string;
  alerts: AlertOptions;
}

export interface NodeConsole {
  admin?: AdminServer;
  close(): Promise<void>;
}

export async function startConsole(
  role: 'primary' | 'backup',
  stateDir: string,
  opts: ConsoleOptions,
  src: { status(): NodeReport; activity: Activity; events: EventLog },
  log: Logger,
): Promise<NodeConsole> {
  const sampler = setInterval(() => {
    const s = src.status();
    src.activity.sample(s.lagOps ?? 0, s.lagSeconds ?? 0, s.backlogBytes ?? 0);
  }, 1000);
  sampler.unref();
  const metrics = createMetrics(role, src);
  const alerts = new Alerts(opts.alerts, () => src.status(), src.events, log);
  const admin = opts.admin
    ? await serveAdmin(parseAdminAddress(opts.admin), adminToken(opts.adminTokenFile ?? path.join(stateDir, 'admin.token'), log),
      { ...src, metrics, ackedSeq: () => src.status().appliedSeq }, log).catch((err: Error) => {
      throw new ConfigError(`--admin ${opts.admin}: cannot listen: ${err.message}`);
    })
    : undefined;
  return {
    admin,
    async close() {
      clearInterval(sampler);
      alerts.close();
      await admin?.close();
    },
  };
}
