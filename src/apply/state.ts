// The backup's durable record of what it has applied: which journal, up to which seq. Kept under --state, never in the target.
import { open, type Database, type RootDatabase } from 'lmdb';
import path from 'node:path';
import { decodeEntry, encodeEntry, type JournalEntry } from '../journal/entry.js';

export interface AppliedState {
  journalId: string | undefined;
  appliedSeq: number;
  /** Inside the primary's initial copy (baseline-start applied, baseline-end not yet). */
  resyncing: boolean;
}

export class BackupState {
  private constructor(private readonly db: RootDatabase) {}

  static open(stateDir: string): BackupState {
    return new BackupState(open({ path: path.join(stateDir, 'backup'), mapSize: 2 ** 34 }));
  }

  get(): AppliedState {
    return {
      journalId: this.db.get('journalId') as string | undefined,
      appliedSeq: (this.db.get('appliedSeq') as number | undefined) ?? 0,
      resyncing: this.db.get('resyncing') === true,
    };
  }

  /** Records progress and waits until it is on stable storage. */
  async save(s: AppliedState): Promise<void> {
    await this.db.transaction(() => {
      this.db.put('journalId', s.journalId);
      this.db.put('appliedSeq', s.appliedSeq);
      this.db.put('resyncing', s.resyncing);
    });
    await this.db.flushed;
  }

  /** The transactions whose writes are staged here until their commit. */
  staging(): StagedTransactions {
    return new StagedTransactions(this.db.openDB<Buffer, [string, number]>({ name: 'staged', encoding: 'binary' }));
  }

  close(): Promise<void> {
    return this.db.close();
  }
}

/**
 * A transaction's writes, held until its commit entry. Kept in memory and written behind to lmdb: save() flushes
 * them with the applied seq, so what was acknowledged as staged survives a restart of the backup.
 */
export class StagedTransactions {
  private readonly byTxn = new Map<string, JournalEntry[]>();

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
  }

  /** The staged writes in seq order. */
  entries(txn: string): JournalEntry[] {
    return [...(this.byTxn.get(txn) ?? [])].sort((a, b) => a.seq - b.seq);
  }

  drop(txn: string): void {
    for (const e of this.byTxn.get(txn) ?? []) void this.db.remove([txn, e.seq]);
    this.byTxn.delete(txn);
  }

  get open(): number {
    return this.byTxn.size;
  }
}
