// Transaction-protected files on the primary: which files each open transaction holds, and the before-image of
// every change, kept durably beside the journal so an abort, or a restart after a crash, can restore them.
// The backup stages a transaction's writes and applies them only at its commit entry (apply/applier.ts).
import fs from 'node:fs';
import type { Database, Key } from 'lmdb';
import { nsToTimestamp, type Stamp } from '../journal/entry.js';
import type { BeforeImage, CommittedView } from './committed.js';
import { setTimes } from '../fs/native.js';
import type { Journal } from '../journal/journal.js';
import { stampsOf } from '../journal/stamps.js';

export const XATTR_TXN = 'user.drms.txn';
/** On the backup's target root: odd while a transaction's files are being swapped in (see consistentRead). */
export const XATTR_COMMIT_GEN = 'user.drms.commit_gen';

/** A transaction control value written to user.drms.txn: "begin:ID", "commit:ID" or "abort:ID". */
export interface TxnControl {
  action: 'begin' | 'commit' | 'abort';
  id: string;
}

/** A transaction request that cannot be honoured; `errno` is what the caller sees. */
export class TxnError extends Error {
  constructor(message: string, readonly errno: number) {
    super(message);
    this.name = 'TxnError';
  }
}

const EINVAL = -22;
const EBUSY = -16;

export function parseTxnControl(value: Buffer): TxnControl {
  const m = /^(begin|commit|abort):([A-Za-z0-9._-]{1,128})$/.exec(value.toString().trim());
  if (!m) throw new TxnError(`${XATTR_TXN} takes begin:ID, commit:ID or abort:ID (ID of letters, digits, . _ -), not "${value.toString()}"`, EINVAL);
  return { action: m[1] as TxnControl['action'], id: m[2]! };
}

interface OpenTxn {
  paths: string[];
  /** Times of each file when it joined, restored by a rollback. */
  stamps: Stamp[];
  /** Before-images saved so far. */
  images: number;
}

export class TransactionTable {
  private readonly store: Database<OpenTxn | BeforeImage, Key[]>;
  private readonly byPath = new Map<string, string>();

  /** `abs(p)` reaches a mount path on the real directory. */
  constructor(journal: Journal, private readonly abs: (p: string) => string) {
    this.store = journal.store('transactions');
    for (const id of this.openIds()) for (const p of this.get(id).paths) this.byPath.set(p, id);
  }

  txnOf(p: string): string | undefined {
    return this.byPath.get(p);
  }

  /** Whether any transaction is open. */
  get holdsAny(): boolean {
    return this.byPath.size > 0;
  }

  /** Every path held by a transaction at or below `p` (a directory being renamed or removed). */
  holds(p: string): boolean {
    if (this.byPath.has(p)) return true;
    for (const held of this.byPath.keys()) if (held.startsWith(p === '/' ? '/' : p + '/')) return true;
    return false;
  }

  openIds(): string[] {
    const ids: string[] = [];
    for (const key of this.store.getKeys({ start: ['t'], end: ['t\uffff'] })) ids.push(String(key[1]));
    return ids;
  }

  /** Adds `p` to transaction `id` (started by its first file). */
  begin(id: string, p: string): void {
    const holder = this.byPath.get(p);
    if (holder === id) return;
    if (holder) throw new TxnError(`${p} is already in transaction ${holder}`, EBUSY);
    const st = fs.lstatSync(this.abs(p), { bigint: true });
    if (!st.isFile()) throw new TxnError(`${p} is not a regular file`, EINVAL);
    const txn = this.store.get(['t', id]) as OpenTxn | undefined ?? { paths: [], stamps: [], images: 0 };
    txn.paths.push(p);
    txn.stamps.push([p, nsToTimestamp(st.atimeNs), nsToTimestamp(st.mtimeNs)]);
    this.store.putSync(['t', id], txn);
    this.byPath.set(p, id);
  }

  /** Saves what a write of `length` bytes at `offset`, or a truncate to `offset` (length 0), is about to change. */
  saveBefore(id: string, p: string, offset: number, length: number): void {
    const fd = fs.openSync(this.abs(p), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const size = fs.fstatSync(fd).size;
      const end = length ? Math.min(size, offset + length) : size;
      const data = Buffer.alloc(Math.max(0, end - offset));
      fs.readSync(fd, data, 0, data.length, offset);
      const txn = this.get(id);
      const image: BeforeImage = { path: p, offset, data, size };
      this.store.transactionSync(() => {
        void this.store.put(['b', id, txn.images++], image);
        void this.store.put(['t', id], txn);
      });
    } finally {
      fs.closeSync(fd);
    }
  }

  /** `p` as its open transaction found it, or undefined when no transaction holds it. */
  committedView(p: string): CommittedView | undefined {
    const id = this.byPath.get(p);
    if (!id) return undefined;
    const txn = this.get(id);
    const [, atime, mtime] = txn.stamps[txn.paths.indexOf(p)]!;
    const images: BeforeImage[] = [];
    for (let n = txn.images - 1; n >= 0; n--) {
      const img = this.store.get(['b', id, n]) as BeforeImage | undefined;
      if (img?.path === p) images.push(img);
    }
    const size = images.length ? images[images.length - 1]!.size : fs.statSync(this.abs(p)).size;
    return { size, atime, mtime, images };
  }

  /** The transaction's files, checked to be open. */
  paths(id: string): string[] {
    return this.get(id).paths;
  }

  /** Restores every before-image, newest first, and the files' times; the transaction stays open (see end()). */
  rollback(id: string): string[] {
    const txn = this.get(id);
    const fds = new Map<string, number>();
    try {
      for (let n = txn.images - 1; n >= 0; n--) {
        const img = this.store.get(['b', id, n]) as BeforeImage | undefined;
        if (!img) continue;
        let fd = fds.get(img.path);
        if (fd === undefined) fds.set(img.path, (fd = fs.openSync(this.abs(img.path), fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW)));
        if (img.data.length) fs.writeSync(fd, img.data, 0, img.data.length, img.offset);
        fs.ftruncateSync(fd, img.size);
      }
      for (const fd of fds.values()) fs.fdatasyncSync(fd); // once per file, before the abort is journaled
    } finally {
      for (const fd of fds.values()) fs.closeSync(fd);
    }
    for (const [p, atime, mtime] of txn.stamps) setTimes(this.abs(p), atime, mtime);
    return txn.paths;
  }

  /** Forgets the transaction; call inside Journal.appendWith so its end and its journal entry are one. */
  end(id: string): void {
    const txn = this.get(id);
    for (let n = 0; n < txn.images; n++) void this.store.remove(['b', id, n]);
    void this.store.remove(['t', id]);
    for (const p of txn.paths) this.byPath.delete(p);
  }

  private get(id: string): OpenTxn {
    const txn = this.store.get(['t', id]) as OpenTxn | undefined;
    if (!txn) throw new TxnError(`no open transaction ${id}`, EINVAL);
    return txn;
  }
}

/**
 * After a restart, rolls back every transaction the previous process left open (as VOS recovery does) and
 * journals its abort, so the backup discards what it staged.
 */
export async function rollbackOpenTransactions(journal: Journal, root: string, log: { warn(o: object, msg: string): void }): Promise<void> {
  const table = new TransactionTable(journal, (p) => root + p);
  for (const id of table.openIds()) {
    const paths = table.rollback(id);
    journal.appendWith({ op: 'txn-abort', txn: id }, stampsOf(root, paths), () => table.end(id));
    log.warn({ txn: id, paths }, 'recovery: rolled back a transaction left open by the previous run');
  }
}
