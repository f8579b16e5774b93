// What was mirrored, per file and for the whole node: live counters for metrics and the dashboard, a one-second
// history of throughput and lag, and per-minute totals kept in lmdb (<state>/activity) for `drms report`.
import { open, type Database, type RootDatabase } from 'lmdb';
import path from 'node:path';

export interface FileActivity {
  path: string;
  cls: string;
  ops: number;
  bytes: number;
  /** Milliseconds since the epoch. */
  first: number;
  last: number;
  /** Longest time (seconds) one of its operations waited for the backup's acknowledgement. */
  maxLag: number;
  /** Journal seq of its last operation: pending while the backup has not applied it. */
  lastSeq: number;
}

export interface HistoryPoint {
  t: number;
  ops: number;
  bytes: number;
  lagOps: number;
  lagSeconds: number;
  backlogBytes: number;
}

export interface ActivityReport {
  since: number;
  until: number;
  system: { ops: number; bytes: number; byKind: Record<string, number>; maxLag: number; first?: number; last?: number };
  files?: Array<Omit<FileActivity, 'lastSeq'>>;
}

interface Bucket {
  ops: number;
  bytes: number;
  first: number;
  last: number;
  maxLag: number;
  cls?: string;
  byKind?: Record<string, number>;
}

const MINUTE = 60_000;
const HISTORY = 600;
/** Files tracked live; beyond it the least recently changed half is dropped from the live table (not the report). */
const LIVE_FILES = 20_000;
/** Unacknowledged operations whose wait is measured per file; beyond it only the node's lag is measured. */
const LAG_QUEUE = 200_000;
const FLUSH_MS = 10_000;
/** The node's own row in a minute's bucket (paths start with '/'). */
const SYSTEM = '';

export class Activity {
  readonly opsByKind = new Map<string, number>();
  readonly bytesByKind = new Map<string, number>();
  readonly opsByClass = new Map<string, number>();
  private readonly live = new Map<string, FileActivity>();
  private readonly history: HistoryPoint[] = [];
  private readonly pending = new Map<number, Map<string, Bucket>>();
  private readonly unacked: Array<[seq: number, path: string, ts: number]> = [];
  private readonly env: RootDatabase;
  private readonly minutes: Database<Bucket, [number, string]>;
  private readonly timer: NodeJS.Timeout;
  private sampleOps = 0;
  private sampleBytes = 0;
  private totalOps = 0;
  private totalBytes = 0;

  /** `classOf` names a path's policy class; `retentionMs` bounds what the report keeps. */
  constructor(stateDir: string, private readonly classOf: (p: string) => string, private readonly retentionMs = 7 * 24 * 3600_000) {
    this.env = open({ path: path.join(stateDir, 'activity'), maxDbs: 2, mapSize: 2 ** 32 });
    this.minutes = this.env.openDB<Bucket, [number, string]>({ name: 'minutes' });
    this.timer = setInterval(() => void this.flush(), FLUSH_MS);
    this.timer.unref();
  }

  /** One operation journaled on the primary: counted, and its wait for the backup's acknowledgement measured (acked). */
  record(seq: number, kind: string, p: string | undefined, bytes: number, now = Date.now()): void {
    this.count(seq, kind, p, bytes, now);
    if (p !== undefined && this.unacked.length < LAG_QUEUE) this.unacked.push([seq, p, now]);
  }

  /**
   * `ops` operations of one kind on one path applied on the backup, the last at `seq`, `bytes` in all: counted.
   * Nothing acknowledges them here, so they wait in no queue (one that filled up to its cap, kept for good, had the
   * backup's garbage collector mark it every second).
   */
  applied(seq: number, kind: string, p: string | undefined, bytes: number, now = Date.now(), ops = 1): void {
    this.count(seq, kind, p, bytes, now, ops);
  }

  /** Operations waiting for the backup's acknowledgement, whose wait is measured. */
  get waiting(): number {
    return this.unacked.length;
  }

  private count(seq: number, kind: string, p: string | undefined, bytes: number, now: number, ops = 1): void {
    this.opsByKind.set(kind, (this.opsByKind.get(kind) ?? 0) + ops);
    if (bytes) this.bytesByKind.set(kind, (this.bytesByKind.get(kind) ?? 0) + bytes);
    this.totalOps += ops;
    this.totalBytes += bytes;
    const minute = now - (now % MINUTE);
    let rows = this.pending.get(minute);
    if (!rows) this.pending.set(minute, (rows = new Map()));
    const sys = rows.get(SYSTEM) ?? { ops: 0, bytes: 0, first: now, last: now, maxLag: 0, byKind: {} };
    sys.ops += ops;
    sys.bytes += bytes;
    sys.last = now;
    sys.byKind![kind] = (sys.byKind![kind] ?? 0) + ops;
    rows.set(SYSTEM, sys);
    if (p === undefined) return;
    let f = this.live.get(p);
    if (!f) {
      if (this.live.size >= LIVE_FILES) this.dropOldest();
      f = { path: p, cls: this.classOf(p), ops: 0, bytes: 0, first: now, last: now, maxLag: 0, lastSeq: 0 };
      this.live.set(p, f);
    }
    f.ops += ops;
    f.bytes += bytes;
    f.last = now;
    f.lastSeq = seq;
    this.opsByClass.set(f.cls, (this.opsByClass.get(f.cls) ?? 0) + ops);
    const row = rows.get(p) ?? { ops: 0, bytes: 0, first: now, last: now, maxLag: 0, cls: f.cls };
    row.ops += ops;
    row.bytes += bytes;
    row.last = now;
    rows.set(p, row);
  }

  /** The backup has applied up to `seq`: each file's wait is measured. */
  acked(seq: number, now = Date.now()): void {
    let i = 0;
    for (; i < this.unacked.length && this.unacked[i]![0] <= seq; i++) {
      const [, p, ts] = this.unacked[i]!;
      const lag = (now - ts) / 1000;
      const f = this.live.get(p);
      if (f && lag > f.maxLag) f.maxLag = lag;
      const minute = ts - (ts % MINUTE);
      const row = this.pending.get(minute)?.get(p);
      if (row && lag > row.maxLag) row.maxLag = lag;
    }
    if (i) this.unacked.splice(0, i);
  }

  /** Once a second: a point of the throughput and lag history (the node's lag also goes in the report). */
  sample(lagOps: number, lagSeconds: number, backlogBytes: number, now = Date.now()): void {
    this.history.push({ t: now, ops: this.totalOps - this.sampleOps, bytes: this.totalBytes - this.sampleBytes, lagOps, lagSeconds, backlogBytes });
    if (this.history.length > HISTORY) this.history.shift();
    this.sampleOps = this.totalOps;
    this.sampleBytes = this.totalBytes;
    const minute = now - (now % MINUTE);
    let rows = this.pending.get(minute);
    if (!rows) this.pending.set(minute, (rows = new Map()));
    const sys = rows.get(SYSTEM) ?? { ops: 0, bytes: 0, first: now, last: now, maxLag: 0, byKind: {} };
    if (lagSeconds > sys.maxLag) sys.maxLag = lagSeconds;
    rows.set(SYSTEM, sys);
  }

  recentHistory(): HistoryPoint[] {
    return this.history;
  }

  /** Files by last change, newest first; `pending`: the backup has not applied its last operation. */
  files(ackedSeq: number, limit = 500): Array<FileActivity & { pending: boolean }> {
    return [...this.live.values()].sort((a, b) => b.last - a.last).slice(0, limit).map((f) => ({ ...f, pending: f.lastSeq > ackedSeq }));
  }

  private dropOldest(): void {
    const byAge = [...this.live.values()].sort((a, b) => a.last - b.last);
    for (const f of byAge.slice(0, byAge.length / 2)) this.live.delete(f.path);
  }

  /** Writes the minutes gathered in memory to lmdb (merged with what is there) and drops what is past retention. */
  async flush(now = Date.now()): Promise<void> {
    const batches = [...this.pending];
    this.pending.clear();
    const cutoff = now - this.retentionMs;
    await this.minutes.transaction(() => {
      for (const [minute, rows] of batches) {
        for (const [p, b] of rows) {
          const old = this.minutes.get([minute, p]);
          void this.minutes.put([minute, p], old ? merge(old, b) : b);
        }
      }
      for (const { key } of this.minutes.getRange({ end: [cutoff, SYSTEM] })) void this.minutes.remove(key);
    });
  }

  /** Activity since `since` (ms): the node's totals and, with `files`, each file's. */
  async report(since: number, files: boolean, now = Date.now()): Promise<ActivityReport> {
    await this.flush(now);
    return reportFrom(this.minutes, since, files, now);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
    await this.env.close();
  }
}

/** A report read from a stopped node's <state>/activity. */
export async function readActivityReport(stateDir: string, since: number, files: boolean): Promise<ActivityReport> {
  const env = open({ path: path.join(stateDir, 'activity'), maxDbs: 2, readOnly: true });
  try {
    return reportFrom(env.openDB<Bucket, [number, string]>({ name: 'minutes' }), since, files, Date.now());
  } finally {
    await env.close();
  }
}

function reportFrom(db: Database<Bucket, [number, string]>, since: number, withFiles: boolean, now: number): ActivityReport {
  const system: ActivityReport['system'] = { ops: 0, bytes: 0, byKind: {}, maxLag: 0 };
  const files = new Map<string, Omit<FileActivity, 'lastSeq'>>();
  for (const { key, value: b } of db.getRange({ start: [since - (since % MINUTE), SYSTEM] })) {
    const [, p] = key;
    if (b.last < since) continue;
    if (p === SYSTEM) {
      system.ops += b.ops;
      system.bytes += b.bytes;
      system.maxLag = Math.max(system.maxLag, b.maxLag);
      system.first = Math.min(system.first ?? b.first, b.first);
      system.last = Math.max(system.last ?? b.last, b.last);
      for (const [k, n] of Object.entries(b.byKind ?? {})) system.byKind[k] = (system.byKind[k] ?? 0) + n;
    } else if (withFiles) {
      const f = files.get(p);
      if (f) Object.assign(f, merge(f, b));
      else files.set(p, { path: p, cls: b.cls ?? 'other', ops: b.ops, bytes: b.bytes, first: b.first, last: b.last, maxLag: b.maxLag });
    }
  }
  return { since, until: now, system, files: withFiles ? [...files.values()].sort((a, b) => (a.path < b.path ? -1 : 1)) : undefined };
}

function merge<T extends Bucket | Omit<FileActivity, 'lastSeq'>>(a: T, b: Bucket): T {
  const byKind = 'byKind' in a && a.byKind ? { ...a.byKind } : undefined;
  if (byKind) for (const [k, n] of Object.entries(b.byKind ?? {})) byKind[k] = (byKind[k] ?? 0) + n;
  return { ...a, ops: a.ops + b.ops, bytes: a.bytes + b.bytes, first: Math.min(a.first, b.first), last: Math.max(a.last, b.last), maxLag: Math.max(a.maxLag, b.maxLag), ...(byKind && { byKind }) };
}
