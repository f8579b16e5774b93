// The backup's addresses, preferred first (--to HOST:PORT[,HOST:PORT...]).
import { ConfigError } from '../errors.js';

export interface Route {
  host: string;
  port: number;
  /** As given, for logs and status. */
  label: string;
}

/** Port 0 (any free port) only where `allowAnyPort`, i.e. for --listen. */
export function parseHostPort(spec: string, flag: string, allowAnyPort = false): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(spec.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < (allowAnyPort ? 0 : 1) || port > 65535) throw new ConfigError(`${flag}: "${spec}" is not HOST:PORT`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

export function parseRoutes(spec: string): Route[] {
  const routes = spec.split(',').filter((s) => s.trim() !== '').map((s) => ({ ...parseHostPort(s, '--to'), label: s.trim() }));
  if (routes.length === 0) throw new ConfigError('--to needs at least one HOST:PORT');
  return routes;
}
