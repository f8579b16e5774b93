// The durable, ordered journal of captured operations (lmdb under --state).
// Journal first: begin() records an entry before its operation runs, complete() releases it to the shipper,
// retract() drops it if the operation failed. Records survive a crash of the process; flushed() makes them
// survive a power cut, as a group commit, and an idle timer bounds the exposure.
// With the native binding, seqs come from its Sequencer and every entry is appended to its capture log (the
// write-ahead log it makes writes durable with) when it is recorded; the next ingest() takes it in with the entries
// the binding captured itself, and lmdb stores it only if the backup has not acknowledged it by the time it must
// (see HELD_BYTES). Without it, every record is an lmdb commit.
import { open, type RootDatabase, type Database, type Key } from 'lmdb';
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs, { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DrmsError } from '../errors.js';
import { closeCaptureLogs, FrameKind, framesOf, framesToRedo, readCaptureLogs, startCaptureLogs, type CaptureLogs, type Frame, type Sequencer } from './capture-log.js';
import { decodeEntry, encodeEntry, summarize, summarizeEncoded, type EntrySummary, type JournalEntry, type Op, type Stamp } from './entry.js';
import { Segments } from './segments.js';

/** Unflushed entries are flushed at least this often. */
const FLUSH_INTERVAL_MS = 1000;
/**
 * How long entries may wait to be taken into lmdb (and shipped) with others: bounds the lag it adds. 3 ms against 1
 * (2026-12-07, alternating pairs): a third less JavaScript CPU a record on each site, 8 writers +13% (3 of 3 pairs),
 * 1 writer faster in 7 of 8, metadata +8-22%; replication lag p50 2 ms instead of 1, p99 5-8 ms instead of 3-5.
 */
const INGEST_DELAY_MS = 3;
/**
 * Entries kept in memory for the shipper (see read()), while it keeps up; a backlog is read from lmdb. 32 of its
 * batches: with 4, 1 MiB writes left it more than 4 MiB behind and reading lmdb at 0.6 ms a MiB on the primary.
 */
const RECENT_BYTES = 32 * 2 ** 20;
/** The machine's memory, or its cgroup's limit where lower: a container's OOM killer counts against that. */
export function memoryLimit(): number {
  const total = os.totalmem();
  const limit = process.constrainedMemory(); // 0 or 2^64 where there is none
  return limit > 0 && limit < total ? limit : total;
}
/**
 * Entries taken in with the native binding wait in memory for the backup's acknowledgement while the backlog is
 * within this many bytes; lmdb stores those still unacknowledged when the backlog grows past it, when a swap of the
 * capture logs is about to overwrite their frames (those taken in before the last swap), or when a mount's session
 * attaches or detaches. Until then their frames in the capture logs are their durable copy (flushed() syncs them).
 * With 1 MiB writes lmdb's put and commit were 0.4 of the primary's JavaScript time, and its file another write of
 * every byte; with 32 MiB, a backup acknowledging in groups left most of them stored anyway. With 96 MiB (the
 * shipper's 64 MiB in flight and the backup's 32 MiB flush groups) a backup that fell behind for a moment had lmdb
 * store everything held, and the JavaScript thread that did it then shipped slower: 273-367 MB/s of 1 MiB writes,
 * 150-670 MiB a run stored, the primary's peak RSS 313-630 MiB (lmdb's map); with 256 MiB, 390-410 MB/s, next to
 * nothing stored, 281-457 MiB. A sixteenth of the memory this process may use at most (see memoryLimit).
 */
export const HELD_BYTES = Math.min(256 * 2 ** 20, Math.floor(memoryLimit() / 16));
/** Hand-over buffers of one entry given back (see wholeParts) from this size: smaller ones weigh little on V8's count. */
const WHOLE_PART_BYTES = 64 * 2 ** 10;
/** The capture log in use is swapped for the other one past this many bytes of frames (see rotateIfDue). */
const ROTATE_BYTES = 64 * 2 ** 20;
/** The acknowledged entries in lmdb are dropped (a database of them: Segments) about every this many bytes. */
const SEGMENT_BYTES = 32 * 2 ** 20;
/** The backlog is measured from a mark of the bytes journaled up to a seq taken this often (it errs this much high). */
const MARK_BYTES = 64 * 1024;
/** meta's key for StoredCounts. */
const COUNTS_KEY = 'storedCounts';

/** What the backlog is measured from, recorded in every transaction that stores entries (see loadCounts). */
interface StoredCounts {
  storedBytes: number;
  /** The highest seq in lmdb once the transaction commits: another writer's entries make it differ. */
  highestSeq: number;
  trimmedMark: number;
}

export interface EncodedEntry {
  seq: number;
  bytes: Buffer;
}

export class Journal extends EventEmitter {
  readonly id: string;
  /** The last entry taken in (begun here, or captured); see lastSeq. */
  private last: number;
  /** Entries begun and not completed: the one in flight, or those in doubt after a crash. */
  private readonly pending = new Set<number>();
  private sequencer: Sequencer | undefined;
  /** The capture logs, ready for the native binding (undefined: opened read-only). */
  readonly captureLogs: CaptureLogs | undefined;
  private rotating = false;
  /** The capture log the native binding appends to: 0 when it attaches (mount.ts starts it so), swapped by rotate(). */
  private activeLog: 0 | 1 = 0;
  /** Entries taken in up to here may have their frames in the other log, which the next swap overwrites. */
  private swapSeq = 0;
  /** The last entry whose operation completed: the shipper reads up to here. */
  readySeq: number;
  /** The backup has applied entries up to here durably (they may be trimmed). */
  ackedSeq: number;
  /** The backup has applied entries up to here to its files (at or ahead of ackedSeq). */
  replayedSeq = 0;
  /** The highest seq a caller waits to be durable at the backup (waitAcked). */
  durableWanted = 0;
  /** Entries up to here are trimmed: gone from memory, and lmdb's are no longer read. */
  private trimmedSeq: number;
  /** The trim lmdb has recorded (its meta's ackedSeq): behind trimmedSeq while only held entries were trimmed. */
  private recordedAckedSeq: number;
  /** The previous process stopped without closing the journal (crash, SIGKILL, power cut). */
  readonly uncleanStop: boolean;
  /** After an unclean stop: captured entries whose data a power cut may have kept from their files (framesToRedo). */
  private redo: JournalEntry[] = [];
  private readonly env: RootDatabase;
  private flushRunning = false;
  private flushWaiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  private unflushed = false;
  private readonly flushTimer: NodeJS.Timeout | undefined;
  /** The lmdb data file, flushed by flushed(). */
  private dataFd = -1;
  private readonly entries: Segments;
  /**
   * Bytes of every entry taken in (stored or held), counted on from those found unacknowledged when meta held no
   * count (see backlogBytes).
   */
  private storedBytes = 0;
  /** Pairs of a seq and storedBytes once no entry above the seq was stored yet, ascending (see backlogBytes). */
  private readonly marks: number[] = [];
  /** The mark at or below the acknowledged seq lmdb holds (trimmedSeq), as the counts in meta record it. */
  private trimmedMark = 0;
  /** The operation of the entry begun last, for `observer` when it completes. */
  private inflight: Op | undefined;
  /** Told of every entry whose operation completed (activity counters); must be cheap. */
  observer: ((seq: number, entry: EntrySummary) => void) | undefined;
  private readonly meta: Database<unknown, string>;

  private constructor(env: RootDatabase, readonly dir: string, private readonly readOnly: boolean) {
    super();
    this.setMaxListeners(0); // one listener per sync-mode waiter
    this.env = env;
    this.meta = env.openDB<unknown, string>({ name: 'meta' });
    this.entries = new Segments(env, this.meta, SEGMENT_BYTES);
    const existing = this.meta.get('journalId') as string | undefined;
    this.id = existing ?? randomUUID();
    if (!existing && !readOnly) this.meta.putSync('journalId', this.id);
    this.ackedSeq = (this.meta.get('ackedSeq') as number | undefined) ?? 0;
    this.replayedSeq = this.ackedSeq;
    this.trimmedSeq = this.ackedSeq;
    this.recordedAckedSeq = this.ackedSeq;
    this.last = Math.max(this.ackedSeq, this.entries.highestSeq);
    this.uncleanStop = this.meta.get('running') === true;
    this.readySeq = this.last;
    if (readOnly) return;
    this.dataFd = fs.openSync(path.join(dir, 'journal', 'data.mdb'), 'r');
    this.loadCounts();
    this.marks.push(this.ackedSeq, this.trimmedMark);
    const { doubts, generation } = this.recoverCaptureLogs();
    // After an unclean stop the last unacknowledged entry is in doubt until recovery settles it (with capture
    // logs: the entry in flight in JavaScript, and a write captured last).
    for (const seq of doubts ?? (this.uncleanStop && this.last > this.ackedSeq ? [this.last] : [])) this.pending.add(seq);
    this.settleReady();
    this.captureLogs = startCaptureLogs(dir, generation + 1);
    this.meta.putSync('running', true);
    this.flushTimer = setInterval(() => {
      this.recordTrim();
      if (!this.rotateIfDue() && this.unflushed) void this.flushed().catch((err) => this.emit('error', err));
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

  /** The last entry journaled (begun, captured or appended); it may still be in flight. */
  get lastSeq(): number {
    this.ingest();
    return this.last;
  }

  /**
   * The native binding serves the mount: seqs come from it, every entry goes to its capture log too, and what it
   * captured is taken in on `ingest()`. Detached (undefined) when it unmounts.
   */
  attach(sequencer: Sequencer | undefined, settled = true): void {
    this.commitNow(Infinity); // a session starts its logs over (mount.ts), and detached nothing may wait outside lmdb
    this.wholeParts.clear();
    this.sequencer = sequencer;
    this.activeLog = 0;
    this.swapSeq = this.last;
    if (!settled) this.logsSettled = false;
  }

  /** False once a detached mount could not make its captured writes durable in their files (the logs must stay). */
  private logsSettled = true;

  /** Commits the next entry before its operation runs; returns its seq. Calls are serialized by the caller. */
  begin(op: Op, stamps?: Stamp[]): number {
    const seq = this.journaled((seq) => this.put(seq, op, stamps));
    this.pending.add(seq);
    this.inflight = op;
    return seq;
  }

  /** Takes the next seq and runs `write` with it; if it fails, the seq is given back (or filled with nothing). */
  private journaled(write: (seq: number) => void): number {
    const seq = this.sequencer ? this.sequencer.reserve() : this.last + 1;
    try {
      write(seq);
    } catch (err) {
      if (this.sequencer && !this.sequencer.unreserve(seq)) this.voidEntry(seq);
      throw err;
    }
    this.last = Math.max(this.last, seq);
    return seq;
  }

  /**
   * The operation of an entry completed; `final` replaces the entry when the outcome added facts. It ships with
   * the next batch (see ingestSoon).
   */
  complete(seq: number, final?: { op: Op; stamps?: Stamp[] }): void {
    if (final) this.put(seq, final.op, final.stamps);
    if (this.pending.delete(seq)) this.sequencer?.logFrame(FrameKind.Done, seq);
    const op = final?.op ?? this.inflight;
    this.inflight = undefined;
    if (op) this.observer?.(seq, summarize(op));
    this.ingestSoon();
  }

  private ingestTimer: NodeJS.Timeout | undefined;

  /**
   * With the native binding, what was captured or completed is taken into lmdb a few milliseconds from now with
   * whatever arrives meanwhile: one lmdb commit for many operations (their capture-log frames are their record).
   */
  ingestSoon(): void {
    if (this.sequencer) this.ingestTimer ??= setTimeout(() => this.commitNow(), INGEST_DELAY_MS);
    else this.commitNow();
  }

  /** Takes everything in now (lmdb stores what waits, up to seq `storeThrough`); tells the shipper how far it may send. */
  commitNow(storeThrough = 0): void {
    clearTimeout(this.ingestTimer);
    this.ingestTimer = undefined;
    if (this.ingest(storeThrough)) return;
    this.settleReady();
    this.emit('committed', this.readySeq);
  }

  /**
   * The operation of an unfinished entry failed: it never happened. The last entry goes; one with later entries
   * behind it (captured meanwhile) becomes a 'none' entry, since the sequence may have no gap.
   */
  retract(seq: number): void {
    if (!this.pending.delete(seq)) throw new Error(`retract(${seq}): only an unfinished entry can be retracted`);
    this.inflight = undefined;
    if (!this.sequencer && seq === this.last) {
      this.entries.removeSync(seq);
      this.last = seq - 1;
    } else {
      this.voidEntry(seq);
    }
    this.ingest();
    this.settleReady();
  }

  private voidEntry(seq: number): void {
    this.put(seq, { op: 'none' }, undefined, true);
  }

  /** Every entry up to readySeq is journaled and its operation done: the shipper may send them. */
  private settleReady(): void {
    let lowest = this.untaken ? framesOf(this.untaken[0]!).next().value!.seq : Infinity;
    for (const seq of this.pending) lowest = Math.min(lowest, seq);
    for (const seq of this.unstored.keys()) lowest = Math.min(lowest, seq);
    this.readySeq = lowest === Infinity ? this.last : lowest - 1;
  }

  /** Captured frames lmdb could not take yet (a full disk), as taken: they are retried, and nothing after them ships. */
  private untaken: Buffer[] | undefined;
  /** Entries of ours in the capture log that lmdb has not taken yet (see put()), by seq. */
  private readonly unstored = new Map<number, Buffer>();
  /** What ingest() took in lately, by seq, in its final form: read() takes it from here, not back out of lmdb. */
  private readonly recent = new Map<number, Buffer>();
  /** Entries in `recent` lmdb has not stored (see HELD_BYTES). */
  private readonly held = new Map<number, Buffer>();
  /** No seq below it is in `held` (evicted by seq, as `recent` is). */
  private heldLow = 0;
  /**
   * The native binding's hand-over buffers that hold one entry each (a large write's), by its seq, while `recent`
   * keeps it: given back once the backup acknowledged it (its socket write was over before), so that neither its
   * memory nor V8's count of it waits for a garbage collection, which that count brings on. Forgotten, not given
   * back, where `recent` lets go of one first: the shipper may still be reading it.
   */
  private readonly wholeParts = new Map<number, Buffer>();
  private recentBytes = 0;
  /** No seq below it is in `recent`. Evicted by seq: a Map iterated from its front after deletes there is slow. */
  private recentLow = 0;

  /**
   * The backlog's counts as the last transaction that stored entries left them, so a start reads two numbers, not
   * the backlog (3 s a GiB). Counts a version before them left, or one that stored without them (its highest seq is
   * not theirs), are measured again from the entries.
   */
  private loadCounts(): void {
    const counts = this.meta.get(COUNTS_KEY) as StoredCounts | undefined;
    if (counts && counts.highestSeq === this.entries.highestSeq) {
      this.storedBytes = counts.storedBytes;
      this.trimmedMark = counts.trimmedMark;
      return;
    }
    for (const { value } of this.entries.range(this.ackedSeq + 1)) this.storedBytes += value.length;
    this.trimmedMark = 0;
  }

  /** Within a transaction that stores `added` bytes of entries (after their puts): the counts loadCounts() reads. */
  private putCounts(added: number, trimmedMark = this.trimmedMark): void {
    const counts: StoredCounts = { storedBytes: this.storedBytes + added, highestSeq: this.entries.highestSeq, trimmedMark };
    void this.meta.put(COUNTS_KEY, counts);
  }

  /** An entry taken in (stored or held): the backlog counts it. */
  private stored(bytes: Buffer): void {
    this.storedBytes += bytes.length;
    if (this.storedBytes - this.marks[this.marks.length - 1]! >= MARK_BYTES) this.marks.push(this.entries.highestSeq, this.storedBytes);
  }

  private keepRecent(seq: number, bytes: Buffer): void {
    this.recentLow = this.recent.size === 0 ? seq : Math.min(this.recentLow, seq);
    this.recentBytes += bytes.length - (this.recent.get(seq)?.length ?? 0);
    this.recent.set(seq, bytes);
    // An entry lmdb has not stored stays: memory is its only copy the shipper can read.
    while (this.recentBytes > RECENT_BYTES && this.recent.size > 0 && !this.held.has(this.recentLow)) this.dropRecentBelow(this.recentLow + 1);
  }

  private dropRecentBelow(seq: number): void {
    for (; this.recentLow < seq && this.recent.size > 0; this.recentLow++) {
      this.recentBytes -= this.recent.get(this.recentLow)?.length ?? 0;
      this.recent.delete(this.recentLow);
      this.wholeParts.delete(this.recentLow);
    }
  }

  /** The whole parts of entries up to `seq`, acknowledged by the backup, back to the binding. */
  private giveBackThrough(seq: number): void {
    for (const [partSeq, part] of this.wholeParts) {
      if (partSeq > seq) return;
      this.wholeParts.delete(partSeq);
      this.sequencer?.giveBack(part);
    }
  }

  private hold(seq: number, bytes: Buffer): void {
    this.heldLow = this.held.size === 0 ? seq : Math.min(this.heldLow, seq);
    this.held.set(seq, bytes);
  }

  /** The held entries and `incoming` up to seq `through` (an entry completed since it was taken in its final form). */
  private heldWith(incoming: Map<number, Buffer>, through: number): Map<number, Buffer> {
    const out = new Map<number, Buffer>();
    for (const from of [this.held, incoming]) for (const [seq, bytes] of from) if (seq <= through) out.set(seq, bytes);
    return out;
  }

  /**
   * Takes in what the native binding captured (writes, their times, fsync markers) and the entries recorded here
   * since, in one lmdb transaction that stores them or holds them in memory (see HELD_BYTES); lmdb stores those up
   * to seq `storeThrough`, held ones too. Never throws: what lmdb refuses stays in memory (and in the capture log),
   * 'ingest-failed' says why, the next call retries. True if it told the shipper how far it may send.
   */
  private ingest(storeThrough = 0): boolean {
    const taken = this.sequencer?.take();
    const trim = this.ackedSeq > this.trimmedSeq ? this.ackedSeq : 0;
    if (!taken && !this.untaken && this.unstored.size === 0 && !trim && !(this.held.size > 0 && storeThrough >= this.heldLow)) return false;
    const all = this.untaken && taken ? [...this.untaken, ...taken] : (this.untaken ?? taken);
    const frames: Frame[] = [];
    for (const part of all ?? []) {
      const before = frames.length;
      for (const f of framesOf(part)) frames.push(f);
      if (frames.length === before + 1 && part.length >= WHOLE_PART_BYTES) this.wholeParts.set(frames[before]!.seq, part);
    }
    const incoming = new Map<number, Buffer>();
    for (const f of frames) incoming.set(f.seq, f.body);
    for (const [seq, bytes] of this.unstored) incoming.set(seq, bytes);
    let added = 0;
    for (const bytes of incoming.values()) added += bytes.length;
    // Detached (no capture log holds them) or in a backlog, lmdb stores every entry.
    const through = !this.sequencer || this.backlogBytes() + added > HELD_BYTES ? Infinity : storeThrough;
    const store = through > 0 ? this.heldWith(incoming, through) : undefined;
    const trimmedMark = trim ? this.marks[1]! : this.trimmedMark;
    try {
      // Entries only held need no transaction: the counts go with the next one (a start trusts them only while
      // lmdb's highest seq is theirs, and the entries read back from the capture logs move it). Nor does a trim
      // of entries lmdb does not hold: it is recorded with the next one, at the latest by the flush tick.
      if (store?.size || (trim && this.entries.highestSeq > this.recordedAckedSeq)) this.record(store, added, trim || this.trimmedSeq, trimmedMark);
      this.untaken = undefined;
    } catch (err) {
      this.untaken = all;
      this.settleReady();
      this.emit('ingest-failed', err);
      return false;
    }
    if (through === Infinity) this.held.clear();
    else for (const seq of store?.keys() ?? []) this.held.delete(seq);
    for (const [seq, bytes] of incoming) {
      this.stored(bytes);
      if (!store?.has(seq)) this.hold(seq, bytes);
      this.keepRecent(seq, bytes);
    }
    this.unstored.clear();
    this.unflushed = true;
    if (trim) {
      for (; this.heldLow <= trim && this.held.size > 0; this.heldLow++) this.held.delete(this.heldLow); // lmdb never needs them
      this.giveBackThrough(trim);
      this.dropRecentBelow(trim + 1);
      this.trimmedSeq = trim;
      this.trimmedMark = trimmedMark;
      this.emit('trimmed'); // listeners may measure the backlog
    }
    for (const f of frames) {
      this.last = Math.max(this.last, f.seq);
      const summary = summarizeEncoded(f.body);
      this.observer?.(f.seq, summary);
      if (summary.op === 'create') this.emit('created', summary.path); // created natively: JavaScript saw no create
    }
    this.settleReady();
    if (all) this.emit('ingested', all.reduce((n, part) => n + part.length, 0));
    this.emit('committed', this.readySeq);
    this.checkpointIfWanted();
    if (all) this.rotateIfDue();
    return true;
  }

  /**
   * One lmdb transaction: the entries of `store`, and the trim through `trimTo` (ackedSeq, the counts, a turn of the
   * entries' databases). Throws what lmdb throws.
   */
  private record(store: Map<number, Buffer> | undefined, added: number, trimTo: number, trimmedMark: number): void {
    let turned: (() => void) | undefined;
    // Inside transactionSync, put/remove join that transaction (the *Sync forms would nest one).
    this.env.transactionSync(() => {
      for (const [seq, bytes] of store ?? []) if (seq > this.ackedSeq) this.entries.put(seq, bytes);
      if (trimTo > this.recordedAckedSeq) void this.meta.put('ackedSeq', trimTo);
      this.putCounts(added, trimmedMark);
      turned = this.entries.turn(trimTo);
    });
    turned?.();
    this.recordedAckedSeq = trimTo;
    this.unflushed = true;
  }

  /** Records a trim that ingest() left to the next transaction (a restart before it resends a little more). */
  private recordTrim(): void {
    if (this.trimmedSeq <= this.recordedAckedSeq) return;
    try {
      this.record(undefined, 0, this.trimmedSeq, this.trimmedMark);
    } catch (err) {
      this.emit('ingest-failed', err); // the next tick tries again
    }
  }

  private checkpointing = false;

  /** Lets fdatasyncs through the mount flush only the capture log again, once none of our operations is in flight. */
  private checkpointIfWanted(): void {
    if (this.checkpointing || this.pending.size > 0 || !this.sequencer?.wantsCheckpoint()) return;
    this.checkpointing = true;
    this.sequencer.checkpoint().then(
      () => (this.checkpointing = false),
      (err: unknown) => {
        this.checkpointing = false;
        this.emit('checkpoint-failed', err);
      },
    );
  }

  /** An entry with no operation behind it (times, fsync markers, the initial copy). */
  append(op: Op, stamps?: Stamp[]): number {
    const seq = this.journaled((seq) => this.put(seq, op, stamps, true));
    this.inflight = op;
    this.complete(seq);
    return seq;
  }

  /** append() and `alongside` (changes to a store()) in one lmdb transaction: both happen or neither. */
  appendWith(op: Op, stamps: Stamp[] | undefined, alongside: () => void): number {
    const seq = this.journaled((seq) => {
      const bytes = this.encode(seq, op, stamps, true);
      this.env.transactionSync(() => {
        this.entries.put(seq, bytes);
        this.putCounts(bytes.length);
        alongside();
      });
      this.stored(bytes);
      this.sequencer?.logFrame(FrameKind.Entry, seq, bytes);
    });
    this.unflushed = true;
    this.inflight = op;
    this.complete(seq);
    return seq;
  }

  /**
   * Reads the capture logs a previous run left: entries the journal may lack (lmdb is flushed lazily, the logs at
   * every fsync) are put back, on stable storage before the logs start over. `doubts`: after an unclean stop,
   * entries whose operation may not have run (undefined when the logs held none).
   */
  private recoverCaptureLogs(): { doubts?: number[]; generation: number } {
    const { frames, generation } = readCaptureLogs(this.dir);
    if (this.uncleanStop) this.redo = framesToRedo(frames).map((f) => decodeEntry(f.body));
    const found = new Map<number, { kind: number; body: Buffer }>();
    const done = new Set<number>();
    let lastFrame: { kind: number; seq: number; body: Buffer } | undefined;
    for (const f of frames) {
      if (f.kind === FrameKind.Generation || f.kind === FrameKind.Checkpoint) continue;
      lastFrame = f;
      if (f.seq <= this.ackedSeq) continue;
      if (f.kind === FrameKind.Done) done.add(f.seq);
      else found.set(f.seq, f);
    }
    if (found.size === 0) return { generation };
    let added = 0; // lmdb may hold some of them already, counted
    this.env.transactionSync(() => {
      for (const [seq, f] of found) {
        added += f.body.length - (this.entries.get(seq)?.length ?? 0);
        this.entries.put(seq, Buffer.from(f.body));
      }
      this.putCounts(added);
    });
    this.storedBytes += added;
    fs.fdatasyncSync(this.dataFd);
    for (const seq of found.keys()) this.last = Math.max(this.last, seq);
    if (!this.uncleanStop) return { doubts: [], generation };
    const doubts = [...found].filter(([seq, f]) => f.kind === FrameKind.Entry && !done.has(seq) && !decodeEntry(f.body).done).map(([seq]) => seq);
    // A captured write reached its file unless the crash came between its frame and its data: then it is last
    // (and redone with the others when it is one of them).
    if (this.redo.length === 0 && lastFrame?.kind === FrameKind.Captured && found.has(lastFrame.seq) && decodeEntry(lastFrame.body).op === 'write') doubts.push(lastFrame.seq);
    return { doubts, generation };
  }

  /**
   * Starts a swap of the capture logs once the active one holds ROTATE_BYTES of frames: checked as entries are taken
   * in, not only by the flush tick, at whose pace the logs grew to 200-400 MiB with large or many writes (and were
   * cut back at the next swap). Whether it started one.
   */
  private rotateIfDue(): boolean {
    if (!this.sequencer || this.rotating || this.sequencer.logBytes() <= ROTATE_BYTES) return false;
    void this.rotate().catch((err) => this.emit('error', err));
    return true;
  }

  /** Swaps capture logs; the old one's frames are in lmdb, on stable storage, before the next swap empties it. */
  private async rotate(): Promise<void> {
    this.rotating = true;
    const session = this.sequencer!;
    try {
      await session.checkpoint();
      if (this.sequencer !== session) return; // unmounted meanwhile
      // The swap overwrites the other log, where entries taken in before the last swap have their frames: lmdb
      // stores those still held, on stable storage, first.
      this.ingest(this.swapSeq);
      if (this.untaken || [...this.held.keys()].some((seq) => seq <= this.swapSeq)) {
        throw new DrmsError(`lmdb could not store the entries up to seq ${this.swapSeq} whose frames the swap would overwrite: the capture logs are not swapped`, { seq: this.swapSeq });
      }
      await this.flushed();
      if (this.sequencer !== session) return; // unmounted meanwhile: everything is stored
      await session.rotate(); // off this thread: captured entries go on being taken in meanwhile
      if (this.sequencer !== session) return; // a new session starts the logs over
      this.activeLog = this.activeLog === 0 ? 1 : 0;
      this.ingest(); // takes in every frame appended before the swap
      this.swapSeq = this.last;
    } finally {
      this.rotating = false;
    }
  }

  /** A database of its own beside the entries, for state that must change atomically with them (appendWith). */
  store<V>(name: string): Database<V, Key[]> {
    return this.env.openDB<V, Key[]>({ name });
  }

  /** The captured entries to write again after an unclean stop, in order (once: they can be many). */
  takeRedo(): JournalEntry[] {
    const redo = this.redo;
    this.redo = [];
    return redo;
  }

  /** Entries whose operation may have been in flight at an unclean stop (recovery redoes them). */
  inDoubt(): JournalEntry[] {
    const out: JournalEntry[] = [];
    for (const seq of [...this.pending].sort((a, b) => a - b)) {
      const bytes = this.entry(seq);
      const e = bytes ? decodeEntry(bytes) : undefined;
      if (e && !e.done) out.push(e);
      else this.complete(seq);
    }
    return out;
  }

  /**
   * Records an entry. With the native binding the capture log's frame is the record (it survives a crash of the
   * process; recovery reads it back) and lmdb takes it with the next ingest(): one lmdb commit per operation
   * instead of one at its beginning and one at its end. Without it, an lmdb commit.
   */
  private put(seq: number, op: Op, stamps?: Stamp[], done?: boolean): void {
    const bytes = this.encode(seq, op, stamps, done);
    if (this.sequencer) {
      this.sequencer.logFrame(FrameKind.Entry, seq, bytes);
      this.unstored.set(seq, bytes);
    } else {
      this.env.transactionSync(() => {
        this.entries.put(seq, bytes);
        this.putCounts(bytes.length);
      });
      this.stored(bytes);
    }
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
    this.ingest();
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
    // sync runs on the calling thread, and here that thread serves every FUSE request. Entries lmdb does not have
    // are in the capture logs, flushed beside it: the active one, and the other for those taken in before the last
    // swap (or refused by lmdb), or both while a swap runs: which one is active then is the binding's to say.
    const logs = this.captureLogs?.logFds ?? [];
    const both = this.untaken || this.rotating || (this.held.size > 0 && this.heldLow <= this.swapSeq);
    const fds = [this.dataFd, ...(both ? logs : this.held.size > 0 ? logs.slice(this.activeLog, this.activeLog + 1) : [])];
    let left = fds.length;
    let failure: Error | null = null;
    for (const fd of fds) {
      fs.fdatasync(fd, (err: Error | null) => {
        failure ??= err;
        if (--left > 0) return;
        this.flushRunning = false;
        for (const w of batch) (failure ? w.reject(failure) : w.resolve());
        if (this.flushWaiters.length) this.startFlush();
      });
    }
  }

  /** Committed entries from `from` on (up to `lastSeq`), up to a byte budget (at least one entry). */
  read(from: number, maxBytes: number, maxCount: number, lastSeq = Infinity): EncodedEntry[] {
    const out: EncodedEntry[] = [];
    const end = Math.min(this.readySeq, lastSeq);
    let bytes = 0;
    let seq = from;
    for (let value; seq <= end && out.length < maxCount && bytes < maxBytes && (value = this.recent.get(seq)); seq++) {
      out.push({ seq, bytes: value });
      bytes += value.length;
    }
    if (seq > end || out.length >= maxCount || bytes >= maxBytes) return out;
    for (const { key, value } of this.entries.range(seq, end + 1)) {
      out.push({ seq: key, bytes: value });
      bytes += value.length;
      if (bytes >= maxBytes || out.length >= maxCount) break;
    }
    return out;
  }

  /**
   * Every entry the backup may still need from `from` on, in order, also one in flight at a crash (failback reads
   * them all). Those it acknowledged are trimmed, even where their database still holds them (Segments).
   */
  *entriesFrom(from: number): Generator<JournalEntry> {
    this.ingest(Infinity);
    if (this.held.size > 0) throw new DrmsError(`lmdb could not store the entries from seq ${this.heldLow} on: they cannot be read in order`, { seq: this.heldLow });
    for (const { value } of this.entries.range(Math.max(from, this.trimmedSeq + 1))) yield decodeEntry(value);
  }

  /** The first seq still held (older ones were trimmed after the backup applied them). */
  firstSeq(): number {
    const last = this.lastSeq; // takes in what lmdb has not yet
    const stored = this.entries.firstKey(this.trimmedSeq + 1) ?? last + 1;
    for (let seq = Math.max(this.heldLow, this.trimmedSeq + 1); seq < stored && this.held.size > 0; seq++) if (this.held.has(seq)) return seq;
    return stored;
  }

  /** Capture time of the oldest entry the backup has not acknowledged as durable. */
  oldestUnackedTs(): number | undefined {
    return this.tsOf(this.ackedSeq + 1);
  }

  /** Capture time of the oldest entry the backup has not applied (replication lag). */
  oldestUnreplayedTs(): number | undefined {
    return this.tsOf(this.replayedSeq + 1);
  }

  private tsOf(seq: number): number | undefined {
    const value = this.entry(seq);
    return value ? decodeEntry(value).ts : undefined;
  }

  /** An entry's bytes, also one lmdb has not taken yet. */
  private entry(seq: number): Buffer | undefined {
    return this.unstored.get(seq) ?? this.held.get(seq) ?? this.entries.get(seq);
  }

  /**
   * Records the backup's applied seq: waiters go on at once; what it no longer needs is trimmed (and the seq
   * recorded) with the next batch taken into lmdb, then 'trimmed'. A restart before that resends a little more.
   */
  setAcked(seq: number): void {
    this.setReplayed(seq);
    if (seq <= this.ackedSeq) return;
    this.ackedSeq = seq;
    let passed = 0; // marks the next one at or below seq makes useless
    while (2 * passed + 2 < this.marks.length && this.marks[2 * passed + 2]! <= seq) passed++;
    this.marks.splice(0, 2 * passed);
    this.emit('acked', seq);
    this.ingestSoon();
  }

  /**
   * Bytes of the entries in lmdb the backup has not acknowledged: those stored since the last mark at or below
   * ackedSeq (up to MARK_BYTES more than exact, never less).
   */
  backlogBytes(): number {
    return this.storedBytes - this.marks[1]!;
  }

  /** The backup applied entries up to `seq` to its files (durable with a later setAcked). */
  setReplayed(seq: number): void {
    if (seq > this.replayedSeq) this.replayedSeq = seq;
  }

  /** A new session: the backup resumes after `seq`; what it had applied beyond that without a flush is sent again. */
  resumed(seq: number): void {
    this.setAcked(seq);
    this.replayedSeq = Math.max(this.ackedSeq, seq);
  }

  /**
   * Resolves once the backup has applied `seq` durably; rejects after `timeoutMs`. A backup that defers its flushes
   * is asked for one (see durableWanted).
   */
  waitAcked(seq: number, timeoutMs: number): Promise<void> {
    if (this.ackedSeq >= seq) return Promise.resolve();
    if (seq > this.readySeq) this.commitNow(); // a waiter (sync mode) does not wait for the batch
    if (seq > this.durableWanted) {
      this.durableWanted = seq;
      this.emit('durable-wanted', seq);
    }
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
    // A mount that stays (read-only after a switchover) may have captured writes not in their files yet.
    if (this.sequencer) this.attach(undefined, await this.sequencer.checkpoint().then(() => true, () => false));
    // Unsettled: the logs stay, and the next start counts as unclean, so it redoes what they hold.
    const settled = this.logsSettled;
    if (!this.readOnly) {
      clearInterval(this.flushTimer);
      this.recordTrim();
      if (settled) this.meta.putSync('running', false);
      await this.flushed();
      fs.closeSync(this.dataFd);
      // Everything they held is in lmdb, on stable storage: a journal removed later leaves nothing to read back.
      closeCaptureLogs(this.captureLogs!, settled);
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
