// Enforces VOS record rules on files under the mount that declare an organization (user.vos.* xattrs), and says
// what each write does in record terms. Formats are cached by path; namespace changes drop the cache.
import fs from 'node:fs';
import { getAttributeSync } from 'fs-xattr';
import {
  checkContents, checkTruncate, checkWrite, formatOf, recordsBefore, RecordRuleError, XATTR_ORGANIZATION, XATTR_RECORD_SIZE,
  type RecordChange, type RecordFormat,
} from './layout.js';

interface Known {
  fmt: RecordFormat | undefined;
  /** Sequential files: records before `end`, kept while appends arrive at the end. */
  count?: number;
  end?: number;
}

export class RecordRules {
  private readonly known = new Map<string, Known>();

  /** namesChanged() at the last lookup. */
  private names = 0;

  /**
   * `abs(p)` reaches a mount path on the real directory; `namesChanged()` counts namespace changes made elsewhere
   * (the native binding's): when it moves, what is known by path may be another file's.
   */
  constructor(private readonly abs: (p: string) => string, private readonly namesChanged: () => number = () => 0) {}

  /** Drops what is known of `p` (or of everything, after a rename or unlink that may move many names). */
  forget(p?: string): void {
    if (p === undefined) this.known.clear();
    else this.known.delete(p);
  }

  /** `p` was just created: it has no attributes yet, so no format (nothing to read). */
  created(p: string): void {
    this.known.set(p, { fmt: undefined });
  }

  /** The file declares a VOS organization (cached). */
  isRecordFile(p: string): boolean {
    return this.lookup(p).fmt !== undefined;
  }

  /** Checks a write of `data` at `offset` (sizeNow: the file's size); throws RecordRuleError (EINVAL). */
  write(p: string, sizeNow: () => number, offset: number, data: Buffer): RecordChange | undefined {
    const k = this.lookup(p);
    if (!k.fmt) return undefined;
    const change = checkWrite(k.fmt, sizeNow(), offset, data, (o, n) => this.read(p, o, n));
    if (!change || k.fmt.organization !== 'sequential') return change;
    if (change.kind === 'append') {
      const before = k.end === offset && k.count !== undefined ? k.count : this.countTo(p, k.fmt, offset);
      k.count = before + change.count;
      k.end = offset + data.length;
      return { ...change, recno: before + 1 };
    }
    return { ...change, recno: this.countTo(p, k.fmt, offset) + 1 };
  }

  truncate(p: string, sizeNow: () => number, newSize: number): RecordChange | undefined {
    const k = this.lookup(p);
    if (!k.fmt) return undefined;
    const change = checkTruncate(k.fmt, sizeNow(), newSize, (o, n) => this.read(p, o, n));
    k.count = k.end = undefined;
    if (change && k.fmt.organization === 'sequential') return { ...change, recno: this.countTo(p, k.fmt, newSize) + 1 };
    return change;
  }

  /**
   * Checks setting a user.vos.* attribute: the pair must name a valid format, and a non-empty file's contents
   * must already be valid records under it.
   */
  setAttribute(p: string, name: string, value: Buffer): void {
    if (name !== XATTR_ORGANIZATION && name !== XATTR_RECORD_SIZE) return;
    const current = (n: string) => (n === name ? value.toString() : this.attribute(p, n));
    const fmt = formatOf(current(XATTR_ORGANIZATION), current(XATTR_RECORD_SIZE));
    this.forget(p);
    if (!fmt) return;
    try {
      checkContents(fmt, fs.readFileSync(this.abs(p)));
    } catch (err) {
      throw new RecordRuleError(`the file's contents are not valid ${fmt.organization} records: ${(err as Error).message}`);
    }
  }

  private lookup(p: string): Known {
    const names = this.namesChanged();
    if (names !== this.names) {
      this.names = names;
      this.known.clear();
    }
    let k = this.known.get(p);
    if (!k) {
      k = { fmt: formatOf(this.attribute(p, XATTR_ORGANIZATION), this.attribute(p, XATTR_RECORD_SIZE)) };
      this.known.set(p, k);
    }
    return k;
  }

  private attribute(p: string, name: string): string | undefined {
    try {
      return getAttributeSync(this.abs(p), name).toString();
    } catch {
      return undefined;
    }
  }

  private countTo(p: string, fmt: RecordFormat, offset: number): number {
    return recordsBefore(fmt, offset, (o, n) => this.read(p, o, n));
  }

  private read(p: string, offset: number, n: number): Buffer {
    const fd = fs.openSync(this.abs(p), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const buf = Buffer.alloc(n);
      return buf.subarray(0, fs.readSync(fd, buf, 0, n, offset));
    } finally {
      fs.closeSync(fd);
    }
  }
}
