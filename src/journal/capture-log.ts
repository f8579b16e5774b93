// The capture logs (<state>/capture-0.log, capture-1.log): the write-ahead log of the native binding, which
// appends every entry there before its operation runs (native/capture.c). After a crash they are read back into
// the journal; then they start over. The files are kept and overwritten (what an older generation left behind
// fails the checksum), so that flushing a frame commits nothing in the filesystem's own journal.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { openFlushFile } from '../fs/native.js';
import { crc32 } from '../wire/checksum.js';

/** Frame kinds, as native/capture.h numbers them. */
export const FrameKind = { Entry: 0, Done: 1, Captured: 2, Generation: 3, Checkpoint: 4 } as const;
const CRC_AT = 13;
const HEADER = 17;
/** A generation frame: the header and its body, the log's salt (u64). */
const GENERATION_FRAME = HEADER + 8;

export interface Frame {
  kind: number;
  seq: number;
  body: Buffer;
}

/** The native binding's side of the journal: seqs for every entry, and the entries it captured itself. */
export interface Sequencer {
  reserve(): number;
  /** Gives `seq` back if no later one was taken; whether it was. */
  unreserve(seq: number): boolean;
  logFrame(kind: number, seq: number, body?: Buffer): void;
  /** Captured frames since the last call, in buffers of whole frames (in seq order). */
  take(): Buffer[] | undefined;
  /** A buffer take() handed over, no longer read by anyone: its memory goes back now. Views of it read as empty. */
  giveBack(part: Buffer): void;
  /**
   * Starts the other log (the current one flushed first), off this thread; the journal must hold everything in the
   * other one, and a checkpoint() since its last frame must have made its writes durable in their files.
   */
  rotate(): Promise<void>;
  /**
   * Syncs the mirrored tree; then (if no frame of ours came meanwhile) fdatasyncs through the mount flush only the
   * capture log again. Call it with no operation of ours in flight.
   */
  checkpoint(): Promise<void>;
  /** An fdatasync had to flush its file: a checkpoint() would let the next ones flush only the log. */
  wantsCheckpoint(): boolean;
  /** Bytes of frames in the active log. */
  logBytes(): number;
}

/** A frame's checksum (native/capture.h): over the log's key, the header up to it, and the body. */
function checksum(frame: Buffer, key: bigint): number {
  const k = Buffer.alloc(8);
  k.writeBigUInt64LE(key);
  return crc32(frame.subarray(HEADER), crc32(frame.subarray(0, CRC_AT), crc32(k)));
}

/** One frame as native/capture.c lays it out, sealed with `key` (the tests write logs with it too). */
export function encodeFrame(kind: number, seq: number, key: bigint, body: Buffer = Buffer.alloc(0)): Buffer {
  const frame = Buffer.alloc(HEADER + body.length);
  frame.writeUInt32LE(body.length, 0);
  frame[4] = kind;
  frame.writeBigUInt64LE(BigInt(seq), 5);
  body.copy(frame, HEADER);
  frame.writeUInt32LE(checksum(frame, key), CRC_AT);
  return frame;
}

/** Frames in `buf` (from byte `at`). Sealed with `key`: up to the first whose checksum fails (a torn frame). */
export function* framesOf(buf: Buffer, key?: bigint, at = 0): Generator<Frame & { end: number }> {
  while (at + HEADER <= buf.length) {
    const len = buf.readUInt32LE(at);
    if (at + HEADER + len > buf.length) return;
    const frame = buf.subarray(at, at + HEADER + len);
    if (key !== undefined && frame.readUInt32LE(CRC_AT) !== checksum(frame, key)) return;
    at += HEADER + len;
    // Two 32-bit halves, no BigInt per frame (a seq stays below 2^53).
    yield { kind: frame[4]!, seq: frame.readUInt32LE(5) + frame.readUInt32LE(9) * 2 ** 32, body: frame.subarray(HEADER), end: at };
  }
}

export interface Log {
  /** Its frames, the generation frame first; none where the file does not start with one. */
  frames: Frame[];
  generation: number;
  /** What its other frames are sealed with: the generation ^ the generation frame's salt (0 in logs before it). */
  key: bigint;
  /** Where its frames end. */
  end: number;
}

/** One log file's frames: its first is its generation frame, sealed with the generation, which gives the key. */
export function readLog(buf: Buffer): Log {
  const none = { frames: [], generation: 0, key: 0n, end: 0 };
  if (buf.length < HEADER || buf[4] !== FrameKind.Generation) return none;
  const generation = buf.readBigUInt64LE(5);
  const [first] = framesOf(buf, generation);
  if (!first) return none;
  const key = generation ^ (first.body.length === 8 ? first.body.readBigUInt64LE(0) : 0n);
  const frames: Frame[] = [first];
  let end = first.end;
  for (const f of framesOf(buf, key, end)) {
    frames.push(f);
    end = f.end;
  }
  return { frames, generation: Number(generation), key, end };
}

/**
 * The captured frames a power cut may have taken from their files: those after the last checkpoint, when nothing
 * but captured frames follows it. An fdatasync there was answered by the log alone; the native side checkpoints
 * before any frame of JavaScript's that follows one, so with such a frame after the checkpoint none was (nothing
 * to redo), and without one, writing these again in order gives every file its bytes.
 */
export function framesToRedo(frames: Frame[]): Frame[] {
  let from = 0;
  frames.forEach((f, i) => {
    if (f.kind === FrameKind.Checkpoint) from = i + 1;
  });
  const after = frames.slice(from).filter((f) => f.kind !== FrameKind.Generation);
  return after.every((f) => f.kind === FrameKind.Captured) ? after : [];
}

const logPath = (stateDir: string, i: number) => path.join(stateDir, `capture-${i}.log`);

export interface LeftOver {
  /** Every frame of both logs, the older log first. */
  frames: Frame[];
  /** The highest generation found (0: none). */
  generation: number;
}

/** What the logs hold (after a crash: entries the journal may lack). */
export function readCaptureLogs(stateDir: string): LeftOver {
  const logs = [0, 1].map((i) => readLog(readLogFile(logPath(stateDir, i))));
  logs.sort((a, b) => a.generation - b.generation);
  return { frames: logs.flatMap((l) => l.frames), generation: Math.max(...logs.map((l) => l.generation)) };
}

/** A log file's bytes; only its header where it does not start with a generation frame (a log cleared or empty). */
function readLogFile(file: string): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return Buffer.alloc(0);
    throw err;
  }
  try {
    const head = Buffer.alloc(HEADER);
    const n = fs.readSync(fd, head, 0, HEADER, 0);
    return n === HEADER && head[4] === FrameKind.Generation ? fs.readFileSync(fd) : head.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}

export interface CaptureLogs {
  logFds: [number, number];
  active: 0;
  generation: number;
  key: bigint;
  /** <state>/flush/capture, never written: its fdatasync flushes the disk's cache alone (native/capture.c). */
  flushFd: number;
}

/**
 * Log 0 started at a new generation (its generation frame written over the file's start), log 1 cleared; their
 * frames are in the journal, on stable storage. The files keep their size: the native side overwrites them.
 */
export function startCaptureLogs(stateDir: string, generation: number): CaptureLogs {
  const fds = [0, 1].map((i) => fs.openSync(logPath(stateDir, i), fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o600)) as [number, number];
  const salt = randomBytes(8);
  fs.writeSync(fds[0], encodeFrame(FrameKind.Generation, generation, BigInt(generation), salt), 0, GENERATION_FRAME, 0);
  clearLog(fds[1]);
  const flushFd = openFlushFile(stateDir, 'capture');
  for (const fd of [...fds, flushFd]) fs.fdatasyncSync(fd);
  const dir = fs.openSync(stateDir, 'r');
  try {
    fs.fsyncSync(dir);
  } finally {
    fs.closeSync(dir);
  }
  return { logFds: fds, active: 0, generation, key: BigInt(generation) ^ salt.readBigUInt64LE(0), flushFd };
}

/** A header of zeros over the log's start: nothing in it is read back. */
function clearLog(fd: number): void {
  if (fs.fstatSync(fd).size > 0) fs.writeSync(fd, Buffer.alloc(HEADER), 0, HEADER, 0);
}

/** Closes the logs; `settled` (everything they held is in the journal, on stable storage): cleared first. */
export function closeCaptureLogs(logs: CaptureLogs, settled: boolean): void {
  for (const fd of logs.logFds) {
    if (settled) clearLog(fd);
    fs.closeSync(fd);
  }
  fs.closeSync(logs.flushFd);
}
