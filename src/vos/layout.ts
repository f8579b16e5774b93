// The on-disk layout of VOS record files and the rules each organization imposes; pure functions, no I/O.
// Layouts (record numbers start at 1, as in VOS):
//   stream      bytes, no records.
//   fixed       records of exactly record_size bytes, back to back: record N at (N-1)*record_size.
//   relative    slots of 4 + record_size bytes: [u8 state][u8 0x52][u16 BE length][data, zero-padded];
//               state 0 = empty (never written, so a hole reads as empty), 1 = present, 2 = deleted.
//   sequential  [u16 BE length][data][0x00 if length is odd][u16 BE length]: the trailing length lets a reader
//               walk backwards and tells a torn record from a whole one.

export const ORGANIZATIONS = ['sequential', 'fixed', 'relative', 'stream'] as const;
export type Organization = (typeof ORGANIZATIONS)[number];

export const XATTR_ORGANIZATION = 'user.vos.organization';
export const XATTR_RECORD_SIZE = 'user.vos.record_size';

/** VOS's largest record. */
export const MAX_RECORD = 32767;
const SLOT_HEADER = 4;
const SLOT_MARK = 0x52;
const SEQ_OVERHEAD = 4;

export interface RecordFormat {
  organization: Organization;
  /** fixed: every record's length; relative: the largest record (the slot's payload); sequential: the largest record. */
  recordSize: number;
}

export type SlotState = 'empty' | 'present' | 'deleted';
const STATE_CODE: Record<SlotState, number> = { empty: 0, present: 1, deleted: 2 };
const STATE_OF = ['empty', 'present', 'deleted'] as const;

export interface RecordInfo {
  recno: number;
  offset: number;
  /** Bytes the record occupies on disk (header, padding and trailer included). */
  span: number;
  state: SlotState;
  data: Buffer;
}

/** What a write or truncate does in record terms: what the journal records besides the bytes. */
export interface RecordChange {
  organization: Organization;
  kind: 'append' | 'rewrite' | 'delete' | 'truncate';
  /** First record touched. */
  recno: number;
  count: number;
}

/** A write or truncate that breaks the organization's rules (answered EINVAL through the mount). */
export class RecordRuleError extends Error {
  readonly errno = -22;
  constructor(message: string) {
    super(message);
    this.name = 'RecordRuleError';
  }
}

/** A record file whose bytes do not parse: where, and why. */
export class RecordDamageError extends Error {
  constructor(message: string, readonly recno: number, readonly offset: number) {
    super(`record ${recno} at offset ${offset}: ${message}`);
    this.name = 'RecordDamageError';
  }
}

/** The format named by the two xattrs; undefined for a plain file; throws RecordRuleError on a bad pair. */
export function formatOf(organization: string | undefined, recordSize: string | undefined): RecordFormat | undefined {
  if (organization === undefined) return undefined;
  if (!(ORGANIZATIONS as readonly string[]).includes(organization)) {
    throw new RecordRuleError(`${XATTR_ORGANIZATION} must be one of ${ORGANIZATIONS.join(', ')}, not "${organization}"`);
  }
  const org = organization as Organization;
  if (org === 'stream') return { organization: org, recordSize: 0 };
  if (recordSize === undefined) {
    if (org === 'sequential') return { organization: org, recordSize: MAX_RECORD };
    throw new RecordRuleError(`a ${org} file needs ${XATTR_RECORD_SIZE} set first`);
  }
  const size = Number(recordSize);
  if (!/^\d+$/.test(recordSize) || size < 1 || size > MAX_RECORD) {
    throw new RecordRuleError(`${XATTR_RECORD_SIZE} must be a whole number from 1 to ${MAX_RECORD}, not "${recordSize}"`);
  }
  return { organization: org, recordSize: size };
}

/** The bytes of one record as it is stored (fixed: the data itself; relative: a whole slot). */
export function encodeRecord(fmt: RecordFormat, data: Uint8Array, state: SlotState = 'present'): Buffer {
  switch (fmt.organization) {
    case 'fixed':
      if (data.length !== fmt.recordSize) throw new RecordRuleError(`a fixed record is ${fmt.recordSize} bytes, not ${data.length}`);
      return Buffer.from(data);
    case 'relative': {
      if (data.length > fmt.recordSize) throw new RecordRuleError(`record of ${data.length} bytes is larger than the slot (${fmt.recordSize})`);
      const slot = Buffer.alloc(SLOT_HEADER + fmt.recordSize);
      slot[0] = STATE_CODE[state];
      slot[1] = SLOT_MARK;
      slot.writeUInt16BE(state === 'present' ? data.length : 0, 2);
      if (state === 'present') slot.set(data, SLOT_HEADER);
      return slot;
    }
    case 'sequential': {
      if (data.length > fmt.recordSize) throw new RecordRuleError(`record of ${data.length} bytes is larger than the file's largest (${fmt.recordSize})`);
      const rec = Buffer.alloc(seqSpan(data.length));
      rec.writeUInt16BE(data.length, 0);
      rec.set(data, 2);
      rec.writeUInt16BE(data.length, rec.length - 2);
      return rec;
    }
    case 'stream':
      return Buffer.from(data);
  }
}

/** Bytes one slot (relative) or record (fixed) occupies; 0 where records vary or do not exist. */
export function slotSize(fmt: RecordFormat): number {
  if (fmt.organization === 'fixed') return fmt.recordSize;
  if (fmt.organization === 'relative') return SLOT_HEADER + fmt.recordSize;
  return 0;
}

/** Bytes a sequential record of `length` bytes occupies on disk. */
export function seqSpan(length: number): number {
  return SEQ_OVERHEAD + length + (length & 1);
}

/** Parses the records in `buf` (which starts at file offset `base`, record `firstRecno`); throws RecordDamageError. */
export function* parseRecords(fmt: RecordFormat, buf: Buffer, base = 0, firstRecno = 1): Generator<RecordInfo> {
  let at = 0;
  let recno = firstRecno;
  const slot = slotSize(fmt);
  while (at < buf.length) {
    const offset = base + at;
    if (fmt.organization === 'stream') return;
    if (slot) {
      if (buf.length - at < slot) throw new RecordDamageError(`torn record: ${buf.length - at} of ${slot} bytes`, recno, offset);
      if (fmt.organization === 'fixed') {
        yield { recno, offset, span: slot, state: 'present', data: buf.subarray(at, at + slot) };
      } else {
        const [code, mark, length] = [buf[at]!, buf[at + 1]!, buf.readUInt16BE(at + 2)];
        const state = STATE_OF[code];
        const blank = code === 0 && mark === 0 && length === 0;
        if (!state || (!blank && mark !== SLOT_MARK)) throw new RecordDamageError(`bad slot header ${buf.subarray(at, at + 4).toString('hex')}`, recno, offset);
        if (length > fmt.recordSize || (state !== 'present' && length !== 0)) throw new RecordDamageError(`slot length ${length} is invalid for a ${state} slot of ${fmt.recordSize}`, recno, offset);
        yield { recno, offset, span: slot, state, data: buf.subarray(at + SLOT_HEADER, at + SLOT_HEADER + length) };
      }
      at += slot;
    } else {
      if (buf.length - at < SEQ_OVERHEAD) throw new RecordDamageError(`torn record header: ${buf.length - at} bytes left`, recno, offset);
      const length = buf.readUInt16BE(at);
      const span = seqSpan(length);
      if (length > fmt.recordSize) throw new RecordDamageError(`record length ${length} exceeds the largest (${fmt.recordSize})`, recno, offset);
      if (buf.length - at < span) throw new RecordDamageError(`torn record: ${buf.length - at} of ${span} bytes`, recno, offset);
      if (buf.readUInt16BE(at + span - 2) !== length) throw new RecordDamageError(`trailing length ${buf.readUInt16BE(at + span - 2)} differs from leading length ${length}`, recno, offset);
      yield { recno, offset, span, state: 'present', data: buf.subarray(at + 2, at + 2 + length) };
      at += span;
    }
    recno++;
  }
}

/**
 * Checks a write against the organization's rules; returns what it does in record terms.
 * `fileSize` is the size before the write; `existing(offset, n)` reads current bytes (sequential rewrites).
 * Rules: fixed and relative writes cover whole records (slots) at record boundaries, without holes past the
 * end for fixed; relative slots must be well formed; sequential files take whole records appended at the end,
 * or a rewrite of one record with one of the same length (VOS cannot change a sequential record's length);
 * only relative records can be deleted.
 */
export function checkWrite(fmt: RecordFormat, fileSize: number, offset: number, data: Buffer, existing: (offset: number, n: number) => Buffer): RecordChange | undefined {
  const org = fmt.organization;
  if (org === 'stream') return undefined;
  const slot = slotSize(fmt);
  if (slot) {
    if (offset % slot !== 0 || data.length % slot !== 0 || data.length === 0) {
      throw new RecordRuleError(`a ${org} write must cover whole ${slot}-byte records at a record boundary (offset ${offset}, ${data.length} bytes)`);
    }
    if (org === 'fixed' && offset > fileSize) throw new RecordRuleError(`a fixed write past the end would leave a gap of ${offset - fileSize} bytes`);
    let deletes = 0;
    if (org === 'relative') {
      try {
        for (const r of parseRecords(fmt, data, offset, offset / slot + 1)) if (r.state === 'deleted') deletes++;
      } catch (err) {
        throw new RecordRuleError(`not a valid relative slot: ${(err as Error).message}`);
      }
    }
    const count = data.length / slot;
    const kind = deletes === count ? 'delete' : offset >= fileSize ? 'append' : 'rewrite';
    return { organization: org, kind, recno: offset / slot + 1, count };
  }
  // sequential
  let records: RecordInfo[];
  try {
    records = [...parseRecords(fmt, data, offset)];
  } catch (err) {
    throw new RecordRuleError(`a sequential write must be whole records: ${(err as Error).message}`);
  }
  if (records.length === 0) throw new RecordRuleError('empty sequential write');
  if (offset === fileSize) return { organization: org, kind: 'append', recno: 0, count: records.length };
  if (offset > fileSize) throw new RecordRuleError(`a sequential write past the end (offset ${offset}, size ${fileSize})`);
  if (records.length !== 1) throw new RecordRuleError('a sequential rewrite replaces exactly one record');
  const head = existing(offset, 2);
  const old = head.length === 2 ? head.readUInt16BE(0) : -1;
  const tail = old >= 0 ? existing(offset + seqSpan(old) - 2, 2) : Buffer.alloc(0);
  if (old < 0 || tail.length !== 2 || tail.readUInt16BE(0) !== old) throw new RecordRuleError(`offset ${offset} is not the start of a record`);
  if (old !== records[0]!.data.length) throw new RecordRuleError(`a sequential record cannot change length (${old} to ${records[0]!.data.length} bytes)`);
  return { organization: org, kind: 'rewrite', recno: 0, count: 1 };
}

/** Checks a truncate: to a record boundary (sequential: 0 or the end of a record). */
export function checkTruncate(fmt: RecordFormat, fileSize: number, size: number, existing: (offset: number, n: number) => Buffer): RecordChange | undefined {
  const org = fmt.organization;
  if (org === 'stream') return undefined;
  const slot = slotSize(fmt);
  if (slot) {
    if (size % slot !== 0) throw new RecordRuleError(`a ${org} file can only be truncated to a whole number of ${slot}-byte records (asked ${size})`);
    if (org === 'fixed' && size > fileSize) throw new RecordRuleError('a fixed file cannot be extended by truncate (it would add zero records)');
  } else if (size > 0) {
    if (size > fileSize) throw new RecordRuleError('a sequential file cannot be extended by truncate');
    const trailer = existing(size - 2, 2);
    const length = trailer.length === 2 ? trailer.readUInt16BE(0) : -1;
    const start = size - seqSpan(Math.max(length, 0));
    if (length < 0 || start < 0 || existing(start, 2).readUInt16BE(0) !== length) {
      throw new RecordRuleError(`offset ${size} is not the end of a record`);
    }
  }
  return { organization: org, kind: 'truncate', recno: slot ? size / slot + 1 : 0, count: 0 };
}

/** Checks that existing contents fit a format (before an organization is declared on a non-empty file). */
export function checkContents(fmt: RecordFormat, contents: Buffer): void {
  for (const _ of parseRecords(fmt, contents)) void _;
}

/** How many records lie before `offset`, which must be a record boundary; `read(offset, n)` reads the file. */
export function recordsBefore(fmt: RecordFormat, offset: number, read: (offset: number, n: number) => Buffer): number {
  const slot = slotSize(fmt);
  if (slot) return Math.floor(offset / slot);
  if (fmt.organization === 'stream') return 0;
  const end = walkSequential(read, (_, at) => at >= offset);
  if (end.at !== offset) throw new RecordDamageError(`offset ${offset} is inside a record`, end.n, end.at);
  return end.n;
}

/** Where record `recno` starts, or undefined past the last record (`size`: the file's size). */
export function offsetOfRecord(fmt: RecordFormat, recno: number, size: number, read: (offset: number, n: number) => Buffer): number | undefined {
  if (recno < 1) return undefined;
  const slot = slotSize(fmt);
  const at = slot ? (recno - 1) * slot : walkSequential(read, (n, pos) => n === recno - 1 || pos >= size).at;
  return at < size ? at : undefined;
}

/** Walks sequential record headers from the start until `stop(records passed, offset)`; reads 64 KiB at a time. */
function walkSequential(read: (offset: number, n: number) => Buffer, stop: (n: number, at: number) => boolean): { n: number; at: number } {
  let n = 0;
  let at = 0;
  let chunk: Buffer = Buffer.alloc(0);
  let chunkAt = 0;
  while (!stop(n, at)) {
    if (at + 2 > chunkAt + chunk.length) {
      chunk = read(at, 64 * 1024);
      chunkAt = at;
      if (chunk.length < 2) throw new RecordDamageError('the file ends inside a record header', n + 1, at);
    }
    at += seqSpan(chunk.readUInt16BE(at - chunkAt));
    n++;
  }
  return { n, at };
}
