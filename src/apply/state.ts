// The backup's durable record of what it has applied: which journal, up to which seq. Kept under --state, never in the target.
import { open, type RootDatabase } from 'lmdb';
import path from 'node:path';

export interface AppliedState {
  journalId: string | undefined;
  appliedSeq: number;
}

export class BackupState {
  private constructor(private readonly db: RootDatabase) {}

  static open(stateDir: string): BackupState {
    return new BackupState(open({ path: path.join(stateDir, 'backup'), mapSize: 2 ** 28 }));
  }

  get(): AppliedState {
    return {
      journalId: this.db.get('journalId') as string | undefined,
      appliedSeq: (this.db.get('appliedSeq') as number | undefined) ?? 0,
    };
  }

  /** Records progress and waits until it is on stable storage. */
  async save(s: AppliedState): Promise<void> {
    await this.db.transaction(() => {
      this.db.put('journalId', s.journalId);
      this.db.put('appliedSeq', s.appliedSeq);
    });
    await this.db.flushed;
  }

  close(): Promise<void> {
    return this.db.close();
  }
}
