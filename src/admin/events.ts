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
  /** Critical files detected, by class. */
  readonly detected: Record<string, number> = {};

  constructor(private readonly log: Logger) {}

  emit(kind: string, message: string, fields: Record<string, unknown> = {}, level: 'info' | 'warn' | 'error' = 'info'): void {
    const event: DrmsEvent = { ts: Date.now(), kind, message, ...fields };
    this.ring.push(event);
    if (this.ring.length > KEEP) this.ring.shift();
    this.counts[kind] = (this.counts[kind] ?? 0) + 1;
    if (kind === 'detected' && typeof fields.class === 'string') this.detected[fields.class] = (this.detected[fields.class] ?? 0) + 1;
    for (const l of this.listeners) l(event);
    this.log[level]({ event: kind, ...fields }, message);
  }

  private readonly listeners: Array<(e: DrmsEvent) => void> = [];

  /** Called with each event as it happens (alerts). */
  subscribe(listener: (e: DrmsEvent) => void): void {
    this.listeners.push(listener);
  }

  /** The latest `n` events, newest last. */
  recent(n = 20): DrmsEvent[] {
    return this.ring.slice(-n);
  }
}
