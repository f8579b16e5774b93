// Flag values shared by the subcommands: durations, sizes, and the operator's console flags.
import type { ConsoleOptions } from '../admin/console.js';
import { ConfigError } from '../errors.js';

export function seconds(v: string, flag: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new ConfigError(`${flag} must be a positive number of seconds, not "${v}"`);
  return n * 1000;
}

/** A whole number of milliseconds, 0 or more. */
export function milliseconds(v: string, flag: string): number {
  if (!/^\d+$/.test(v.trim())) throw new ConfigError(`${flag} must be a whole number of milliseconds (0 or more), not "${v}"`);
  return Number(v);
}

/** A nice value, -20 (first served) to 19. */
export function niceness(v: string, flag: string): number {
  if (!/^-?\d+$/.test(v.trim()) || Number(v) < -20 || Number(v) > 19) throw new ConfigError(`${flag} must be a whole number from -20 to 19, not "${v}"`);
  return Number(v);
}

/** A size with an optional K, M, G or T suffix (powers of 1024). */
export function bytes(v: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)B?$/i.exec(v.trim());
  if (!m) throw new ConfigError(`${flag} must be a size such as 512M or 8G, not "${v}"`);
  return Math.floor(Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase()));
}

/** An on/off setting: a command-line switch, or true/false in a config file. */
export function flag(v: boolean | string | undefined, name: string): boolean {
  if (v === undefined || typeof v === 'boolean') return v ?? false;
  if (v === 'true' || v === 'false') return v === 'true';
  throw new ConfigError(`${name} must be true or false, not "${v}"`);
}

/** A duration such as 90s, 30m, 6h or 1d. */
export function duration(v: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(s|m|h|d)$/.exec(v.trim());
  if (!m) throw new ConfigError(`${flag} must be a duration such as 30m, 6h or 1d, not "${v}"`);
  return Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
}

export interface ConsoleFlags {
  admin?: string;
  adminTokenFile?: string;
  alertCommand?: string;
  alertWebhook?: string;
  alertLag: string;
  alertBacklog: string;
  alertDisconnected: string;
  alertStuck: string;
}

export function consoleOptions(f: ConsoleFlags): ConsoleOptions {
  if (f.alertWebhook && !/^https?:\/\//.test(f.alertWebhook)) throw new ConfigError(`--alert-webhook must be an http(s) URL, not "${f.alertWebhook}"`);
  return {
    admin: f.admin,
    adminTokenFile: f.adminTokenFile,
    alerts: {
      command: f.alertCommand,
      webhook: f.alertWebhook,
      lagSeconds: seconds(f.alertLag, '--alert-lag') / 1000,
      backlogBytes: bytes(f.alertBacklog, '--alert-backlog'),
      disconnectedSeconds: seconds(f.alertDisconnected, '--alert-disconnected') / 1000,
      stuckSeconds: seconds(f.alertStuck, '--alert-stuck') / 1000,
    },
  };
}

/** Defaults of the primary's flags, also for a set read from a config file. */
export const PRIMARY_DEFAULTS = {
  mode: 'async',
  syncTimeout: '30',
  onSyncTimeout: 'degrade',
  drainTimeout: '10',
  maxBacklog: '8G',
  alertLag: '60',
  alertBacklog: '1G',
  alertDisconnected: '30',
  alertStuck: '60',
  nice: '-10',
} as const;
