// Operator-facing events (a critical file detected, a file leaving the policy, a verify result): logged, counted
// by kind, and the most recent kept in a bounded ring for status and the dashboard.
import type { Logger } from '../log.js';

export interface DrmsEvent {
  ts: number;
  kind: string;
  message: string;
  path?: string;
  [field: string]: unknown;
}

const KEEP = 200;

export class EventLog {
  private readonly ring: DrmsEvent[] = [];
  readonly counts: Record<string, number> = {};

  constructor(private readonly log: Logger) {}

  emit(kind: string, message: string, fields: Record<string, unknown> = {}, level: 'info' | 'warn' | 'error' = 'info'): void {
    const event: DrmsEvent = { ts: Date.now(), kind, message, ...fields };
    this.ring.push(event);
    if (this.ring.length > KEEP) this.ring.shift();
    this.counts[kind] = (this.counts[kind] ?? 0) + 1;
    this.log[level]({ event: kind, ...fields }, message);
  }

  /** The latest `n` events, newest last. */
  recent(n = 20): DrmsEvent[] {
    return this.ring.slice(-n);
  }
}
