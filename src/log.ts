// The process logger: pino JSON on stdout with stable field names (seq, path, peer, route).
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(role: string): Logger {
  return pino({
    name: 'drms',
    base: { role, pid: process.pid },
    level: process.env.DRMS_LOG_LEVEL ?? 'info',
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}
