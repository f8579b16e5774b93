// The backup's durable record of what it has applied: which journal, up to which seq (the applied record, and the
// redo log beyond it). Kept under --state, never in the target.
import { open, type Database, type RootDatabase } from 'lmdb';
import fs from 'node:fs';
import path from 'node:path';
import { overwriteFlusher, type OverwriteFlusher } from '../fs/native.js';
import { decodeEntry, encodeEntry, type JournalEntry } from '../journal/entry.js';
import { crc32 } from '../wire/checksum.js';
import { RedoLog } from './redo-log.js';

export interface AppliedState {
  journalId: string | undefined;
  appliedSeq: number;
  /** Inside the primary's initial copy (baseline-start applied, baseline-end not yet). */
  resyncing: boolean;
}

/** The redo log covers at most this much time and this many entry bytes a batch; past them the files are flushed. */
const REDO_SPAN_MS = 1000;
const REDO_BATCH_BYTES = 64 * 1024;

export class BackupState {
  private staged: StagedTransactions | undefined;
  /** The applied record advanced by what the redo log holds. */
  private current: AppliedState;
  /** Where the redo log's records not flushed yet bring it (see logged()). */
  private unflushed: AppliedState | undefined;
  private redo: JournalEntry[] = [];
  private savedAt = Date.now();

  private constructor(
    private readonly db: RootDatabase,
    private readonly record: AppliedRecord,
    private readonly redoLog: RedoLog,
    private readonly mark: AppliedMark,
  ) {
    let seq = record.state.appliedSeq;
    for (const r of redoLog.records()) {
      if (r.journalId !== record.state.journalId) continue; // another journal's, covered long ago
      for (const raw of r.entries) {
        const e = decodeEntry(raw);
        if (e.seq <= seq) continue; // covered by the applied record
        if (e.seq !== seq + 1) break;
        this.redo.push(e);
        seq = e.seq;
      }
    }
    this.current = { ...record.state, appliedSeq: seq };
  }

  static open(stateDir: string): BackupState {
    const dir = path.join(stateDir, 'backup');
    const db = open({ path: dir, mapSize: 2 ** 34 });
    // Before the record had a file of its own, lmdb held it.
    const inLmdb = (): AppliedState => ({
      journalId: db.get('journalId') as string | undefined,
      appliedSeq: (db.get('appliedSeq') as number | undefined) ?? 0,
      resyncing: db.get('resyncing') === true,
    });
    return new BackupState(db, AppliedRecord.open(dir, inLmdb), RedoLog.open(dir), AppliedMark.open(dir));
  }

  /**
   * `s` is applied to the target's files (not flushed): a backup killed from here on, with no reboot since, resumes
   * after it (markedAhead). Not past a transaction's staged writes that lmdb may not hold yet.
   */
  applied(s: AppliedState): void {
    if (!this.staged?.changed) this.mark.write(s);
  }

  /**
   * After a backup was killed (the same boot): how far it had applied the target's files beyond what is recorded
   * durable, or undefined. Its redo log's entries up to there are dropped: the files had them, and entries after them
   * may have changed what their paths name. The caller flushes the target's filesystem, then checkpoints at it.
   */
  markedAhead(): AppliedState | undefined {
    const m = this.mark.read();
    if (!m || m.journalId !== this.current.journalId || m.appliedSeq <= this.current.appliedSeq) return undefined;
    this.redo = [];
    return m;
  }

  /** What is applied and on stable storage, in the target's files or in the redo log. */
  get(): AppliedState {
    return this.current;
  }

  /** Entries acknowledged through the redo log alone: the target's files may lack them until they are applied again (once). */
  takeRedo(): JournalEntry[] {
    const redo = this.redo;
    this.redo = [];
    return redo;
  }

  /**
   * A checkpoint: the caller has flushed the target's files. Records progress and waits until it is on stable
   * storage: staged writes first (lmdb), then the applied seq; the redo log starts over.
   */
  async save(s: AppliedState): Promise<void> {
    if (this.staged?.changed) {
      this.staged.changed = false;
      await this.db.transaction(() => undefined); // after the staged writes queued before it
      await this.db.flushed;
    }
    this.record.write(s);
    this.redoLog.reset();
    this.current = s;
    this.unflushed = undefined; // the files hold them now
    this.savedAt = Date.now();
  }

  /**
   * Records progress through the redo log: `entries` (all redoable()) are written to it, durable once flushLogged()
   * returns, while the files they were applied to are not flushed. False (nothing recorded): a checkpoint is due,
   * save() instead.
   */
  logged(s: AppliedState, entries: Buffer[]): boolean {
    const r = this.record.state;
    if (s.journalId === undefined || s.journalId !== r.journalId || s.resyncing !== r.resyncing || Date.now() - this.savedAt > REDO_SPAN_MS) return false;
    if (entries.reduce((n, e) => n + e.length, 0) > REDO_BATCH_BYTES) return false; // one flush of the file costs less
    if (!this.redoLog.append(s.journalId, entries)) return false;
    this.unflushed = s;
    return true;
  }

  /** Makes what logged() wrote durable; returns the applied state it reaches, or undefined when nothing was waiting. */
  flushLogged(): AppliedState | undefined {
    const s = this.unflushed;
    if (!s) return undefined;
    this.redoLog.flush();
    this.unflushed = undefined;
    this.current = s;
    return s;
  }

  /** The transactions whose writes are staged here until their commit. */
  staging(): StagedTransactions {
    this.staged = new StagedTransactions(this.db.openDB<Buffer, [string, number]>({ name: 'staged', encoding: 'binary' }));
    return this.staged;
  }

  async close(): Promise<void> {
    this.mark.close();
    this.record.close();
    this.redoLog.close();
    await this.db.close();
  }
}

/** Bytes of one slot of the applied record: a page, so writing one slot never touches the other's sector. */
const SLOT = 4096;

/**
 * The applied state in a small file of its own (`applied` beside lmdb's files): two slots written in turn, each
 * with a counter and a CRC, so a torn write leaves the other. A save is one overwrite and one flush (overwriteFlusher);
 * as an lmdb commit it cost two flushes and lmdb-js's write batching (1.2 ms a batch on this machine, measured).
 */
class AppliedRecord {
  private constructor(
    private readonly fd: number,
    private readonly flusher: OverwriteFlusher,
    public state: AppliedState,
    private counter: number,
  ) {}

  static open(dir: string, previous: () => AppliedState): AppliedRecord {
    const fd = fs.openSync(path.join(dir, 'applied'), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    // Both slots written once and flushed, in full (older versions left holes): a save is then an overwrite, whose
    // flush has no metadata to commit.
    const st = fs.fstatSync(fd);
    if (st.size < 2 * SLOT || st.blocks * 512 < 2 * SLOT) {
      const both = Buffer.alloc(2 * SLOT);
      fs.readSync(fd, both, 0, 2 * SLOT, 0);
      fs.writeSync(fd, both, 0, 2 * SLOT, 0);
      fs.fdatasyncSync(fd);
    }
    let best: { counter: number; state: AppliedState } | undefined;
    for (const slot of [0, 1]) {
      const found = readSlot(fd, slot);
      if (found && (!best || found.counter > best.counter)) best = found;
    }
    const flusher = overwriteFlusher(fd, dir, 'applied');
    return best ? new AppliedRecord(fd, flusher, best.state, best.counter) : new AppliedRecord(fd, flusher, previous(), 0);
  }

  write(s: AppliedState): void {
    const counter = ++this.counter;
    const json = Buffer.from(JSON.stringify({ counter, ...s }));
    const slot = Buffer.alloc(SLOT);
    slot.writeUInt32LE(json.length, 0);
    slot.writeUInt32LE(crc32(json), 4);
    json.copy(slot, 8);
    fs.writeSync(this.fd, slot, 0, SLOT, (counter % 2) * SLOT);
    // On this thread, as the redo log's flush: a trip through libuv's pool costs two thread wake-ups a checkpoint.
    this.flusher.flush();
    this.state = s;
  }

  close(): void {
    this.flusher.close();
    fs.closeSync(this.fd);
  }
}

function readSlot(fd: number, slot: number): { counter: number; state: AppliedState } | undefined {
  const buf = Buffer.alloc(SLOT);
  if (fs.readSync(fd, buf, 0, SLOT, slot * SLOT) < SLOT) return undefined;
  const len = buf.readUInt32LE(0);
  if (len === 0 || len > SLOT - 8) return undefined;
  const json = buf.subarray(8, 8 + len);
  if (crc32(json) !== buf.readUInt32LE(4)) return undefined;
  const r = JSON.parse(json.toString()) as { counter: number; journalId?: string; appliedSeq: number; resyncing: boolean };
  return { counter: r.counter, state: { journalId: r.journalId, appliedSeq: r.appliedSeq, resyncing: r.resyncing } };
}

/**
 * How far the target's files are applied (`applied-mark` beside the applied record), written after every entry
 * that is not harmless to apply again (not redoable()), and never flushed: a backup killed with entries applied and
 * not yet checkpointed finds it in the page cache with the files' changes, and resumes after them. Applying them
 * again is not harmless as a sequence: a log rotation's rename (app.log to app.log.1) done again, after the new
 * app.log was made, would move the new log over the old one. After a reboot it says nothing (the files may have kept
 * any part of what the page cache held): it carries the boot's id.
 * Layout: [36 boot id][u8 resyncing][f64 seq][u8 journal id length][journal id], the seq and flag rewritten alone
 * while the journal stays.
 */
class AppliedMark {
  private journalId: string | undefined;
  private readonly seqAt = Buffer.alloc(9);

  private constructor(private readonly fd: number, private readonly bootId: string) {}

  static open(dir: string): AppliedMark {
    const fd = fs.openSync(path.join(dir, 'applied-mark'), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    return new AppliedMark(fd, fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
  }

  write(s: AppliedState): void {
    this.seqAt.writeUInt8(s.resyncing ? 1 : 0, 0);
    this.seqAt.writeDoubleLE(s.appliedSeq, 1);
    if (s.journalId === this.journalId) {
      fs.writeSync(this.fd, this.seqAt, 0, 9, BOOT_ID);
      return;
    }
    const id = Buffer.from(s.journalId ?? '');
    fs.writeSync(this.fd, Buffer.concat([Buffer.from(this.bootId.padEnd(BOOT_ID).slice(0, BOOT_ID)), this.seqAt, Buffer.from([id.length]), id]), 0, BOOT_ID + 10 + id.length, 0);
    this.journalId = s.journalId;
  }

  read(): AppliedState | undefined {
    const buf = Buffer.alloc(BOOT_ID + 10 + 255);
    const n = fs.readSync(this.fd, buf, 0, buf.length, 0);
    if (n < BOOT_ID + 10 || buf.toString('utf8', 0, BOOT_ID).trim() !== this.bootId) return undefined;
    const idLen = buf[BOOT_ID + 9]!;
    if (n < BOOT_ID + 10 + idLen) return undefined;
    return { resyncing: buf[BOOT_ID] === 1, appliedSeq: buf.readDoubleLE(BOOT_ID + 1), journalId: buf.toString('utf8', BOOT_ID + 10, BOOT_ID + 10 + idLen) || undefined };
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/** Bytes of a boot id (/proc/sys/kernel/random/boot_id, a UUID). */
const BOOT_ID = 36;

/**
 * A transaction's writes, held until its commit entry. Kept in memory and written behind to lmdb: save() flushes
 * them with the applied seq, so what was acknowledged as staged survives a restart of the backup.
 */
export class StagedTransactions {
  private readonly byTxn = new Map<string, JournalEntry[]>();
  /** Staged or dropped since the last save(), which makes lmdb durable first. */
  changed = false;

  constructor(private readonly db: Database<Buffer, [string, number]>) {
    for (const { key, value } of db.getRange()) {
      const list = this.byTxn.get(key[0]) ?? [];
      list.push(decodeEntry(value));
      this.byTxn.set(key[0], list);
    }
  }

  stage(txn: string, e: JournalEntry): void {
    const list = this.byTxn.get(txn) ?? [];
    if (list.some((x) => x.seq === e.seq)) return; // resent after a restart
    list.push(e);
    this.byTxn.set(txn, list);
    void this.db.put([txn, e.seq], encodeEntry(e));
    this.changed = true;
  }

  /** The staged writes in seq order. */
  entries(txn: string): JournalEntry[] {
    return [...(this.byTxn.get(txn) ?? [])].sort((a, b) => a.seq - b.seq);
  }

  drop(txn: string): void {
    for (const e of this.byTxn.get(txn) ?? []) void this.db.remove([txn, e.seq]);
    this.byTxn.delete(txn);
    this.changed = true;
  }

  get open(): number {
    return this.byTxn.size;
  }
}
