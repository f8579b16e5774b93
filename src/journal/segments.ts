// The journal's entries in lmdb, by seq, in two databases that take turns: entries from `activeBase` on go to the
// active one, older ones are in the other. Once the backup has acknowledged all of the other's, it is emptied whole
// and becomes the active one: one mdb_drop, where a delete per acknowledged entry cost the primary 3x its put.
import type { Database, RootDatabase } from 'lmdb';
import { DrmsError } from '../errors.js';

/** A journal from before segments has 'entries' alone: it is the active one, from seq 0. */
const NAMES = ['entries', 'entries-1'] as const;

export interface StoredEntry {
  key: number;
  value: Buffer;
}

export class Segments {
  /** Opened read-only, a journal from before segments has no 'entries-1': undefined, and no seq is routed to it. */
  private readonly dbs: Array<Database<Buffer, number> | undefined>;
  private active: 0 | 1;
  /** The first seq the active database takes; the other holds those below. */
  private activeBase: number;
  /** Bytes put into the active database since it became active (or since the journal opened). */
  private activeBytes = 0;
  /** What activeBytes was when the other database stopped being the active one (0: before this process). */
  private otherBytes = 0;
  /** The highest seq put (or held when opened), 0 when none: a turn gives the emptied database the seqs above it. */
  private highest = 0;

  constructor(env: RootDatabase, private readonly meta: Database<unknown, string>, private readonly turnBytes: number) {
    this.dbs = NAMES.map((name) => env.openDB<Buffer, number>({ name, encoding: 'binary' }) as Database<Buffer, number> | undefined);
    this.active = (meta.get('activeEntries') as 0 | 1 | undefined) ?? 0;
    this.activeBase = (meta.get('activeBase') as number | undefined) ?? 0;
    for (const db of this.dbs) for (const key of db?.getKeys({ reverse: true, limit: 1 }) ?? []) this.highest = Math.max(this.highest, key);
  }

  get highestSeq(): number {
    return this.highest;
  }

  private dbFor(seq: number): Database<Buffer, number> {
    return this.db(seq >= this.activeBase ? this.active : 1 - this.active);
  }

  private db(i: number): Database<Buffer, number> {
    const db = this.dbs[i];
    if (!db) throw new DrmsError(`the journal's database ${NAMES[i]} is missing, though its meta routes entries to it`, { db: NAMES[i] });
    return db;
  }

  get(seq: number): Buffer | undefined {
    return this.dbFor(seq).get(seq);
  }

  /** Joins the caller's lmdb transaction. */
  put(seq: number, bytes: Buffer): void {
    void this.dbFor(seq).put(seq, bytes);
    this.added(seq, bytes);
  }

  private added(seq: number, bytes: Buffer): void {
    if (seq >= this.activeBase) this.activeBytes += bytes.length;
    if (seq > this.highest) this.highest = seq;
  }

  removeSync(seq: number): void {
    this.dbFor(seq).removeSync(seq);
  }

  /** The lowest seq held from `from` on. */
  firstKey(from: number): number | undefined {
    for (const { key } of this.range(from)) return key;
    return undefined;
  }

  /** Entries from `start` to before `end`, in seq order. */
  *range(start: number, end = Infinity): Generator<StoredEntry> {
    const base = this.activeBase;
    if (start < base) yield* this.db(1 - this.active).getRange({ start, end: Math.min(end, base) });
    if (end > base) yield* this.db(this.active).getRange({ start: Math.max(start, base), end: end === Infinity ? undefined : end });
  }

  /**
   * Within the caller's lmdb transaction: once the backup has acknowledged every entry of the other database
   * (`ackedSeq`) and the two hold turnBytes, empties the other, which is to take the seqs above highestSeq. So a
   * large backlog leaves as soon as it is acknowledged, and what is acknowledged stays under about turnBytes. Returns
   * what to call once the transaction has committed (this routes seqs the new way from then on).
   */
  turn(ackedSeq: number): (() => void) | undefined {
    if (this.activeBytes + this.otherBytes < this.turnBytes || ackedSeq < this.activeBase - 1) return undefined;
    const next = (1 - this.active) as 0 | 1;
    const nextSeq = this.highest + 1;
    this.db(next).clearSync(); // lmdb runs it in the caller's transaction
    void this.meta.put('activeEntries', next);
    void this.meta.put('activeBase', nextSeq);
    return () => {
      this.active = next;
      this.activeBase = nextSeq;
      this.otherBytes = this.activeBytes;
      this.activeBytes = 0;
    };
  }
}
