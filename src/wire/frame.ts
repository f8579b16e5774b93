// Wire frames: [u32 length][u32 crc32][u8 type][body], big-endian; length counts type + body.
import { Packr } from 'msgpackr';
import { ProtocolError } from '../errors.js';
import { tryNativeAddon } from '../fs/native.js';
import { crc32 } from './checksum.js';

const giveBack = tryNativeAddon()?.giveBack;

/** 2: epochs (fencing) and role changes. */
export const PROTOCOL_VERSION = 2;
export const MAX_FRAME = 64 * 1024 * 1024;
const HEADER = 8;

export enum FrameType {
  Hello = 1,
  Challenge = 2,
  Auth = 3,
  Welcome = 4,
  Refused = 5,
  Batch = 6,
  Ack = 7,
  Ping = 8,
  Error = 9,
  /** Primary → backup, in the batch stream: a question about the backup's tree as of the entries before it. */
  Query = 10,
  Answer = 11,
  /** Backup → primary, after authentication: this site knows a newer epoch; the primary is stale and must stop. */
  Fenced = 12,
  /** Primary → backup, in the batch stream after the last entry: a planned switchover, take over at this epoch. */
  Promote = 13,
  /** Backup → primary: promoted (its mount serves) or why not. */
  Promoted = 14,
  /** Primary → backup, in the batch stream: make everything before it durable now and acknowledge it (no body). */
  Flush = 15,
}

export interface Frame {
  type: FrameType;
  body: Buffer;
}

const packr = new Packr({ useRecords: false });

export function packBody(value: unknown): Buffer {
  return packr.pack(value);
}

export function unpackBody<T>(frame: Frame): T {
  try {
    return packr.unpack(frame.body) as T;
  } catch (err) {
    throw new ProtocolError(`undecodable ${FrameType[frame.type]} frame: ${(err as Error).message}`);
  }
}

/** The frame header for a body given as parts; send header and parts back to back. */
export function frameHeader(type: FrameType, parts: readonly Uint8Array[]): Buffer {
  const header = Buffer.allocUnsafe(HEADER + 1);
  header[8] = type;
  let length = 1;
  let crc = crc32(header.subarray(8, 9));
  for (const p of parts) {
    length += p.length;
    crc = crc32(p, crc);
  }
  header.writeUInt32BE(length, 0);
  header.writeUInt32BE(crc, 4);
  return header;
}

/** Reassembles frames from a byte stream; a bad length or checksum throws ProtocolError. */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;

  push(chunk: Buffer): Frame[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const frames: Frame[] = [];
    while (this.buffered >= HEADER) {
      const length = this.lengthAhead();
      if (length < 1 || length > MAX_FRAME) throw new ProtocolError(`frame length ${length} out of range`);
      if (this.buffered < HEADER + length) break;
      const whole = this.take(HEADER + length);
      const expected = whole.readUInt32BE(4);
      const actual = crc32(whole.subarray(HEADER));
      if (expected !== actual) throw new ProtocolError(`frame checksum mismatch (type ${whole[HEADER]}, ${length} bytes)`);
      const type = whole[HEADER] as FrameType;
      if (!(type in FrameType)) throw new ProtocolError(`unknown frame type ${type}`);
      frames.push({ type, body: whole.subarray(HEADER + 1) });
    }
    return frames;
  }

  /** The length field of the next frame's header (HEADER bytes are buffered). */
  private lengthAhead(): number {
    const first = this.chunks[0]!;
    if (first.length >= 4) return first.readUInt32BE(0);
    const head = Buffer.allocUnsafe(4);
    let at = 0;
    for (const c of this.chunks) at += c.copy(head, at, 0, Math.min(c.length, 4 - at));
    return head.readUInt32BE(0);
  }

  /**
   * The next `n` bytes: a view of the first chunk where it holds them all, else a buffer of exactly `n` bytes (see
   * releaseFrame). Chunks the socket read whole and now copied in full go back at once (detached): with 1 MiB writes
   * the backup read 64 KiB chunks at hundreds of MB/s, and V8, counting them until a garbage collection, ran a full
   * one every few tens of milliseconds. The rest of a chunk is a view of memory a frame may hold: kept.
   */
  private take(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0]!;
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafeSlow(n);
    for (let at = 0; at < n;) {
      const c = this.chunks[0]!;
      const k = c.copy(out, at, 0, Math.min(c.length, n - at));
      at += k;
      if (k < c.length) {
        this.chunks[0] = c.subarray(k);
        break;
      }
      this.chunks.shift();
      if (giveBack && spansItsMemory(c, 0)) giveBack(c);
    }
    return out;
  }
}

/**
 * Gives a frame's memory back at once (detached) where the frame has a buffer of its own, as one that came in
 * several chunks has: for a caller that holds no view of its body any more (a batch applied and acknowledged). V8
 * counts such buffers until a garbage collection frees them: the backup receiving 1 MiB writes ran a full one
 * every 70 ms for them. A frame that shares its chunk with others is left to the collector.
 */
export function releaseFrame(frame: Frame): void {
  if (giveBack && spansItsMemory(frame.body, HEADER + 1)) giveBack(frame.body);
}

/** Whether `view` starts `before` bytes into its memory and runs to its end: the memory is its alone (a frame's, with its header). */
function spansItsMemory(view: Buffer, before: number): boolean {
  return view.byteOffset === before && view.buffer.byteLength === before + view.length && view.buffer.byteLength > 0;
}

/**
 * Entries below this size are copied into the batch's own buffer with their lengths: a part each cost the socket a
 * write and the seal a checksum call, more than the copy (buffered 4 KiB writes: a quarter of the primary's
 * JavaScript time in the send). Larger ones go as views of their own memory.
 */
export const COPY_BELOW = 16 * 1024;

/** The bytes encodeBatch copies for `entries`: a buffer at least this large can take them. */
export function batchCopyBytes(entries: readonly Uint8Array[]): number {
  let n = 4;
  for (const e of entries) n += e.length < COPY_BELOW ? 4 + e.length : 4;
  return n;
}

/**
 * A batch body, [u32 count] then [u32 length][entry bytes] per entry, as parts sent back to back. Small entries and
 * the lengths are copied into `into` when it is large enough (batchCopyBytes), else into a new buffer.
 */
export function encodeBatch(entries: readonly Uint8Array[], into?: Buffer): Buffer[] {
  const need = batchCopyBytes(entries);
  const own = into && into.length >= need ? into : Buffer.allocUnsafe(need);
  const parts: Buffer[] = [];
  own.writeUInt32BE(entries.length, 0);
  let at = 4;
  let start = 0;
  for (const e of entries) {
    own.writeUInt32BE(e.length, at);
    at += 4;
    if (e.length < COPY_BELOW) {
      own.set(e, at);
      at += e.length;
      continue;
    }
    parts.push(own.subarray(start, at), Buffer.from(e.buffer, e.byteOffset, e.length));
    start = at;
  }
  if (at > start) parts.push(own.subarray(start, at));
  return parts;
}

export function decodeBatch(body: Buffer): Buffer[] {
  if (body.length < 4) throw new ProtocolError('batch frame too short');
  const count = body.readUInt32BE(0);
  const out: Buffer[] = [];
  let at = 4;
  for (let i = 0; i < count; i++) {
    if (at + 4 > body.length) throw new ProtocolError(`batch truncated at entry ${i}`);
    const len = body.readUInt32BE(at);
    at += 4;
    if (at + len > body.length) throw new ProtocolError(`batch entry ${i} overruns the frame`);
    out.push(body.subarray(at, at + len));
    at += len;
  }
  if (at !== body.length) throw new ProtocolError('batch has trailing bytes');
  return out;
}
