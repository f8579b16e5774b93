// The durable, ordered journal of captured operations (lmdb under --state).
// Journal first: begin() commits an entry before its operation runs, complete() releases it to the shipper,
// retract() drops it if the operation failed. Commits are synchronous (they survive a crash of the process);
// flushed() makes them survive a power cut, as a group commit, and an idle timer bounds the exposure.
import { open, type RootDatabase, type Database, type Key } from 'lmdb';
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs, { existsSync } from 'node:fs';
import path from 'node:path';
import { decodeEntry, encodeEntry, type JournalEntry, type Op, type Stamp } from './entry.js';

/** Unflushed entries are flushed at least this often. */
const FLUSH_INTERVAL_MS = 1000;

export interface EncodedEntry {
  seq: number;
  bytes: Buffer;
}

export class Journal extends EventEmitter {
  readonly id: string;
  /** The last entry begun; it may still be in flight. */
  lastSeq: number;
  /** The last entry whose operation completed: the shipper reads up to here. */
  readySeq: number;
  ackedSeq: number;
  /** The previous process stopped without closing the journal (crash, SIGKILL, power cut). */
  readonly uncleanStop: boolean;
  private readonly env: RootDatabase;
  private flushRunning = false;
  private flushWaiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  private unflushed = false;
  private readonly flushTimer: NodeJS.Timeout | undefined;
  /** The lmdb data file, flushed by flushed(). */
  private dataFd = -1;
  private readonly entries: Database<Buffer, number>;
  /** The operation of the entry begun last, for `observer` when it completes. */
  private inflight: Op | undefined;
  /** Told of every entry whose operation completed (activity counters); must be cheap. */
  observer: ((seq: number, op: Op) => void) | undefined;
  private readonly meta: Database<unknown, string>;

  private constructor(env: RootDatabase, readonly dir: string, private readonly readOnly: boolean) {
    super();
    this.setMaxListeners(0); // one listener per sync-mode waiter
    this.env = env;
    this.entries = env.openDB<Buffer, number>({ name: 'entries', encoding: 'binary' });
    this.meta = env.openDB<unknown, string>({ name: 'meta' });
    const existing = this.meta.get('journalId') as string | undefined;
    this.id = existing ?? randomUUID();
    if (!existing && !readOnly) this.meta.putSync('journalId', this.id);
    this.ackedSeq = (this.meta.get('ackedSeq') as number | undefined) ?? 0;
    let last = this.ackedSeq;
    for (const key of this.entries.getKeys({ reverse: true, limit: 1 })) last = Math.max(last, key);
    this.lastSeq = last;
    this.uncleanStop = this.meta.get('running') === true;
    // After an unclean stop the last unacknowledged entry is in doubt until recovery settles it.
    this.readySeq = this.uncleanStop && last > this.ackedSeq ? last - 1 : last;
    if (readOnly) return;
    this.dataFd = fs.openSync(path.join(dir, 'journal', 'data.mdb'), 'r');
    this.meta.putSync('running', true);
    this.flushTimer = setInterval(() => {
      if (this.unflushed) void this.flushed().catch((err) => this.emit('error', err));
    }, FLUSH_INTERVAL_MS);
    this.flushTimer.unref();
  }

  /** The writer's view; `readOnly` for another process that only reports (status, sync). */
  static open(stateDir: string, opts: { readOnly?: boolean } = {}): Journal {
    // noSync: commits reach the page cache synchronously (13 µs); flushed() syncs when the application asks.
    const readOnly = opts.readOnly ?? false;
    const env = open({ path: path.join(stateDir, 'journal'), maxDbs: 8, mapSize: 2 ** 34, noSync: true, readOnly });
    return new Journal(env, stateDir, readOnly);
  }

  /** The policy (its fingerprint) the last completed initial copy was made under; undefined before the first. */
  get baselinePolicy(): string | undefined {
    return this.meta.get('baselinePolicy') as string | undefined;
  }

  markBaselineDone(policyFingerprint: string): void {
    this.meta.putSync('baselinePolicy', policyFingerprint);
  }

  /** Commits the next entry before its operation runs; returns its seq. Calls are serialized by the caller. */
  begin(op: Op, stamps?: Stamp[]): number {
    const seq = this.lastSeq + 1;
    this.put(seq, op, stamps);
    this.lastSeq = seq;
    this.inflight = op;
    return seq;
  }

  /** The operation of the last entry completed; `final` replaces the entry when the outcome added facts. */
  complete(seq: number, final?: { op: Op; stamps?: Stamp[] }): void {
    if (final) this.put(seq, final.op, final.stamps);
    this.readySeq = seq;
    const op = final?.op ?? this.inflight;
    this.inflight = undefined;
    if (op) this.observer?.(seq, op);
    this.emit('committed', seq);
  }

  /** The operation of the last entry failed: it never happened, so the entry goes. */
  retract(seq: number): void {
    if (seq !== this.lastSeq || seq <= this.readySeq) throw new Error(`retract(${seq}): only the last, unfinished entry can be retracted`);
    this.entries.removeSync(seq);
    this.lastSeq = seq - 1;
    this.inflight = undefined;
  }

  /** An entry with no operation behind it (times, fsync markers, the initial copy). */
  append(op: Op, stamps?: Stamp[]): number {
    const seq = this.lastSeq + 1;
    this.put(seq, op, stamps, true);
    this.lastSeq = seq;
    this.inflight = op;
    this.complete(seq);
    return seq;
  }

  /** append() and `alongside` (changes to a store()) in one lmdb transaction: both happen or neither. */
  appendWith(op: Op, stamps: Stamp[] | undefined, alongside: () => void): number {
    const seq = this.lastSeq + 1;
    this.env.transactionSync(() => {
      void this.entries.put(seq, this.encode(seq, op, stamps, true));
      alongside();
    });
    this.lastSeq = seq;
    this.unflushed = true;
    this.inflight = op;
    this.complete(seq);
    return seq;
  }

  /** A database of its own beside the entries, for state that must change atomically with them (appendWith). */
  store<V>(name: string): Database<V, Key[]> {
    return this.env.openDB<V, Key[]>({ name });
  }

  /** The last entry, if its operation may have been in flight at an unclean stop (recovery redoes it). */
  inDoubt(): JournalEntry | undefined {
    if (this.lastSeq <= this.ackedSeq || this.readySeq === this.lastSeq) return undefined;
    const bytes = this.entries.get(this.lastSeq);
    const e = bytes ? decodeEntry(bytes) : undefined;
    if (e?.done) {
      this.complete(e.seq);
      return undefined;
    }
    return e;
  }

  private put(seq: number, op: Op, stamps?: Stamp[], done?: boolean): void {
    this.entries.putSync(seq, this.encode(seq, op, stamps, done));
    this.unflushed = true;
  }

  private encode(seq: number, op: Op, stamps?: Stamp[], done?: boolean): Buffer {
    const entry: JournalEntry = { ...op, seq, ts: Date.now() };
    if (stamps) entry.stamps = stamps;
    if (done) entry.done = true;
    return encodeEntry(entry);
  }

  /** Resolves when everything appended before the call is on stable storage. */
  flushed(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.flushWaiters.push({ resolve, reject });
      if (!this.flushRunning) this.startFlush();
    });
  }

  private startFlush(): void {
    const batch = this.flushWaiters;
    this.flushWaiters = [];
    this.flushRunning = true;
    this.unflushed = false;
    // What mdb_env_sync does without a write map (lmdb writes with pwrite), but on libuv's pool: lmdb-js's own
    // sync runs on the calling thread, and here that thread serves every FUSE request.
    fs.fdatasync(this.dataFd, (err: Error | null) => {
      this.flushRunning = false;
      for (const w of batch) (err ? w.reject(err) : w.resolve());
      if (this.flushWaiters.length) this.startFlush();
    });
  }

  /** Committed entries from `from` on (up to `lastSeq`), up to a byte budget (at least one entry). */
  read(from: number, maxBytes: number, maxCount: number, lastSeq = Infinity): EncodedEntry[] {
    const out: EncodedEntry[] = [];
    let bytes = 0;
    for (const { key, value } of this.entries.getRange({ start: from, end: Math.min(this.readySeq, lastSeq) + 1, limit: maxCount })) {
      out.push({ seq: key, bytes: value });
      bytes += value.length;
      if (bytes >= maxBytes) break;
    }
    return out;
  }

  /** Every stored entry from `from` on, in order, also one that was in flight at a crash (failback reads them all). */
  *entriesFrom(from: number): Generator<JournalEntry> {
    for (const { value } of this.entries.getRange({ start: from })) yield decodeEntry(value);
  }

  /** The first seq still held (older ones were trimmed after the backup applied them). */
  firstSeq(): number {
    for (const key of this.entries.getKeys({ limit: 1 })) return key;
    return this.lastSeq + 1;
  }

  /** Capture time of the oldest entry the backup has not acknowledged. */
  oldestUnackedTs(): number | undefined {
    const value = this.entries.get(this.ackedSeq + 1);
    return value ? decodeEntry(value).ts : undefined;
  }

  /** Records the backup's applied seq and trims what it no longer needs. */
  setAcked(seq: number): void {
    if (seq <= this.ackedSeq) return;
    const from = this.ackedSeq + 1;
    // Inside transactionSync, put/remove join that transaction (the *Sync forms would nest one).
    this.env.transactionSync(() => {
      void this.meta.put('ackedSeq', seq);
      for (let s = from; s <= seq; s++) void this.entries.remove(s);
    });
    this.ackedSeq = seq;
    this.unflushed = true;
    this.emit('acked', seq); // after the trim: listeners may measure the backlog
  }

  /** Bytes the journal's entries occupy (lmdb pages in use), i.e. the backlog the backup has not applied. */
  backlogBytes(): number {
    const st = this.entries.getStats() as { pageSize: number; treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number };
    return st.pageSize * (st.treeBranchPageCount + st.treeLeafPageCount + st.overflowPages);
  }

  /** Resolves once the backup has applied `seq`; rejects after `timeoutMs`. */
  waitAcked(seq: number, timeoutMs: number): Promise<void> {
    if (this.ackedSeq >= seq) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onAck = (acked: number) => {
        if (acked < seq) return;
        clearTimeout(timer);
        this.off('acked', onAck);
        resolve();
      };
      const timer = setTimeout(() => {
        this.off('acked', onAck);
        reject(new Error(`seq ${seq} not acknowledged within ${timeoutMs} ms`));
      }, timeoutMs);
      this.on('acked', onAck);
    });
  }

  async close(): Promise<void> {
    if (!this.readOnly) {
      clearInterval(this.flushTimer);
      this.meta.putSync('running', false);
      await this.flushed();
      fs.closeSync(this.dataFd);
    }
    await this.env.close();
  }
}

export interface JournalSnapshot {
  journalId: string;
  lastSeq: number;
  ackedSeq: number;
  baselineDone: boolean;
  oldestUnackedTs?: number;
}

/** Reads another process's journal, for `drms status` and `drms sync`; undefined when there is none. */
export function readJournal(stateDir: string): JournalSnapshot | undefined {
  if (!existsSync(path.join(stateDir, 'journal'))) return undefined;
  const j = Journal.open(stateDir, { readOnly: true });
  try {
    return { journalId: j.id, lastSeq: j.lastSeq, ackedSeq: j.ackedSeq, baselineDone: j.baselinePolicy !== undefined, oldestUnackedTs: j.oldestUnackedTs() };
  } finally {
    void j.close();
  }
}
