// The record API for applications: VOS-style record files and transactions on a drms mount (or any directory,
// without enforcement). Each record operation is one write, so the mount sees, checks and journals whole records.
import fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { getAttribute, setAttribute } from 'fs-xattr';
import {
  encodeRecord, formatOf, offsetOfRecord, parseRecords, recordsBefore, RecordRuleError, seqSpan, slotSize, XATTR_ORGANIZATION, XATTR_RECORD_SIZE,
  type Organization, type RecordFormat, type RecordInfo,
} from './layout.js';
import { XATTR_COMMIT_GEN, XATTR_TXN } from './transactions.js';

export interface CreateOptions {
  organization: Organization;
  /** Required for fixed and relative files; for sequential files the largest record (default 32767). */
  recordSize?: number;
  mode?: number;
}

export class RecordFile {
  /** Next record for next(): a record number, starting at 1. */
  private cursor = 1;

  private constructor(readonly path: string, readonly format: RecordFormat, private readonly fh: FileHandle) {}

  /** Creates a new, empty record file and declares its organization (record size first, as the mount requires). */
  static async create(file: string, opts: CreateOptions): Promise<RecordFile> {
    const fmt = formatOf(opts.organization, opts.recordSize === undefined ? undefined : String(opts.recordSize));
    const fh = await fs.promises.open(file, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_RDWR, opts.mode ?? 0o644);
    try {
      if (opts.recordSize !== undefined) await setAttribute(file, XATTR_RECORD_SIZE, Buffer.from(String(opts.recordSize)));
      await setAttribute(file, XATTR_ORGANIZATION, Buffer.from(opts.organization));
    } catch (err) {
      await fh.close();
      throw err;
    }
    return new RecordFile(file, fmt!, fh);
  }

  /** Opens an existing record file; its organization comes from its attributes. */
  static async open(file: string, flags: 'r' | 'r+' = 'r+'): Promise<RecordFile> {
    const fmt = await readFormat(file);
    if (!fmt) throw new RecordRuleError(`${file} declares no organization (${XATTR_ORGANIZATION})`);
    return new RecordFile(file, fmt, await fs.promises.open(file, flags));
  }

  async count(): Promise<number> {
    const size = (await this.fh.stat()).size;
    return recordsBefore(this.format, size, (o, n) => this.readAt(o, n));
  }

  /** Appends a record; returns its record number. */
  async append(data: Uint8Array): Promise<number> {
    const size = (await this.fh.stat()).size;
    const recno = recordsBefore(this.format, size, (o, n) => this.readAt(o, n)) + 1;
    await this.writeAll(encodeRecord(this.format, data), size);
    return recno;
  }

  /** Writes record `recno` of a relative file (an empty or deleted slot, or beyond the end) or rewrites any record. */
  async write(recno: number, data: Uint8Array): Promise<void> {
    await this.writeAll(encodeRecord(this.format, data), await this.offsetFor(recno));
  }

  /** Deletes a record of a relative file: the slot reads as deleted on both sites. */
  async delete(recno: number): Promise<void> {
    if (this.format.organization !== 'relative') throw new RecordRuleError(`records of a ${this.format.organization} file cannot be deleted`);
    await this.writeAll(encodeRecord(this.format, new Uint8Array(0), 'deleted'), await this.offsetFor(recno));
  }

  /** Record `recno`: its data, null for an empty or deleted slot, undefined past the end. */
  async read(recno: number): Promise<Buffer | null | undefined> {
    const info = await this.info(recno);
    if (!info) return undefined;
    return info.state === 'present' ? Buffer.from(info.data) : null;
  }

  async info(recno: number): Promise<RecordInfo | undefined> {
    const size = (await this.fh.stat()).size;
    const at = offsetOfRecord(this.format, recno, size, (o, n) => this.readAt(o, n));
    if (at === undefined) return undefined;
    const head = this.format.organization === 'sequential' ? this.readAt(at, 2) : undefined;
    const span = head ? seqSpan(head.readUInt16BE(0)) : slotSize(this.format);
    return parseRecords(this.format, this.readAt(at, span), at, recno).next().value ?? undefined;
  }

  /** Every record in order, with its state. */
  async records(): Promise<RecordInfo[]> {
    return [...parseRecords(this.format, await this.fh.readFile())];
  }

  /** Positions next() at record `recno`. */
  position(recno: number): void {
    this.cursor = Math.max(1, recno);
  }

  /** The record at the cursor (skipping empty and deleted slots), then advances; undefined at the end. */
  async next(): Promise<{ recno: number; data: Buffer } | undefined> {
    for (;;) {
      const info = await this.info(this.cursor);
      if (!info) return undefined;
      this.cursor++;
      if (info.state === 'present') return { recno: info.recno, data: Buffer.from(info.data) };
    }
  }

  /** Flushes the file (through the mount: the fsync is journaled, and in sync mode replicated). */
  sync(): Promise<void> {
    return this.fh.datasync();
  }

  close(): Promise<void> {
    return this.fh.close();
  }

  private async offsetFor(recno: number): Promise<number> {
    const size = (await this.fh.stat()).size;
    if (this.format.organization === 'relative') return (recno - 1) * slotSize(this.format);
    const at = offsetOfRecord(this.format, recno, size, (o, n) => this.readAt(o, n));
    if (at === undefined) throw new RecordRuleError(`record ${recno} does not exist (a ${this.format.organization} file grows by append)`);
    return at;
  }

  private readAt(offset: number, n: number): Buffer {
    const buf = Buffer.alloc(n);
    return buf.subarray(0, fs.readSync(this.fh.fd, buf, 0, n, offset));
  }

  /** One write call, so the mount sees the whole record (or slot) at once. */
  private async writeAll(bytes: Buffer, offset: number): Promise<void> {
    const { bytesWritten } = await this.fh.write(bytes, 0, bytes.length, offset);
    if (bytesWritten !== bytes.length) throw new Error(`short write to ${this.path}: ${bytesWritten} of ${bytes.length} bytes`);
  }
}

/** A file's record format from its attributes; undefined for a plain file. */
export async function readFormat(file: string): Promise<RecordFormat | undefined> {
  const attr = (name: string) => getAttribute(file, name).then((b) => b.toString(), () => undefined);
  return formatOf(await attr(XATTR_ORGANIZATION), await attr(XATTR_RECORD_SIZE));
}

/** A transaction over files on a drms mount: their changes reach the backup together at commit, or never. */
export class Transaction {
  private readonly files: string[] = [];

  constructor(readonly id: string) {}

  static async begin(id: string, files: Array<string | RecordFile>): Promise<Transaction> {
    const txn = new Transaction(id);
    for (const f of files) await txn.add(f);
    return txn;
  }

  /** Adds a file; its before-images are kept from now on. */
  async add(file: string | RecordFile): Promise<void> {
    const p = typeof file === 'string' ? file : file.path;
    await setAttribute(p, XATTR_TXN, Buffer.from(`begin:${this.id}`));
    this.files.push(p);
  }

  commit(): Promise<void> {
    return this.end('commit');
  }

  /** Restores every file of the transaction as it was when it joined. */
  abort(): Promise<void> {
    return this.end('abort');
  }

  private async end(action: 'commit' | 'abort'): Promise<void> {
    if (!this.files.length) throw new Error(`transaction ${this.id} has no files`);
    await setAttribute(this.files[0]!, XATTR_TXN, Buffer.from(`${action}:${this.id}`));
  }
}

/**
 * For readers of several files on the DR copy: runs `read` until no transaction was being swapped in while it
 * ran (the backup's commit generation on the target root did not move and is even).
 */
export async function consistentRead<T>(targetRoot: string, read: () => Promise<T>, timeoutMs = 10_000): Promise<T> {
  const gen = () => getAttribute(targetRoot, XATTR_COMMIT_GEN).then((b) => b.toString(), () => '0');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const before = await gen();
    if (Number(before) % 2 === 0) {
      const value = await read();
      if ((await gen()) === before) return value;
    }
    if (Date.now() > deadline) throw new Error(`no consistent read of ${targetRoot} within ${timeoutMs} ms: a commit is being applied (or the backup stopped during one)`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
