// The capture logs (<state>/capture-0.log, capture-1.log): the write-ahead log of the native binding, which
// appends every entry there before its operation runs (native/capture.c). After a crash they are read back into
// the journal; then they start over.
import fs from 'node:fs';
import path from 'node:path';
import { crc32 } from 'node:zlib';

/** Frame kinds, as native/capture.h numbers them. */
export const FrameKind = { Entry: 0, Done: 1, Captured: 2, Generation: 3, Checkpoint: 4 } as const;
const CRC_AT = 13;
const HEADER = 17;

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
  /** Captured frames since the last call. */
  take(): Buffer | undefined;
  /**
   * Starts the other log (the current one flushed first); the journal must hold everything in the other one, and a
   * checkpoint() since its last frame must have made its writes durable in their files.
   */
  rotate(): number;
  /**
   * Syncs the mirrored tree; then (if no frame of ours came meanwhile) fdatasyncs through the mount flush only the
   * capture log again. Call it with no operation of ours in flight.
   */
  checkpoint(): Promise<void>;
  /** An fdatasync had to flush its file: a checkpoint() would let the next ones flush only the log. */
  wantsCheckpoint(): boolean;
}

/** A frame's checksum (native/capture.h): over the log's generation, the header up to it, and the body. */
function checksum(frame: Buffer, generation: number): number {
  const gen = Buffer.alloc(8);
  gen.writeBigUInt64LE(BigInt(generation));
  return crc32(frame.subarray(HEADER), crc32(frame.subarray(0, CRC_AT), crc32(gen)));
}

/** One frame as native/capture.c lays it out, for a log of `generation` (the tests write logs with it too). */
export function encodeFrame(kind: number, seq: number, generation: number, body: Buffer = Buffer.alloc(0)): Buffer {
  const frame = Buffer.alloc(HEADER + body.length);
  frame.writeUInt32LE(body.length, 0);
  frame[4] = kind;
  frame.writeBigUInt64LE(BigInt(seq), 5);
  body.copy(frame, HEADER);
  frame.writeUInt32LE(checksum(frame, generation), CRC_AT);
  return frame;
}

/** Frames in `buf`. Read from a log of `generation`: up to the first whose checksum fails (a torn frame). */
export function* framesOf(buf: Buffer, generation?: number): Generator<Frame> {
  for (let at = 0; at + HEADER <= buf.length;) {
    const len = buf.readUInt32LE(at);
    if (at + HEADER + len > buf.length) return;
    const frame = buf.subarray(at, at + HEADER + len);
    if (generation !== undefined && frame.readUInt32LE(CRC_AT) !== checksum(frame, generation)) return;
    yield { kind: frame[4]!, seq: Number(frame.readBigUInt64LE(5)), body: frame.subarray(HEADER) };
    at += HEADER + len;
  }
}

/** The frames of one log file: its first is its generation frame, which says what the others are checked with. */
function framesOfLog(buf: Buffer): { frames: Frame[]; generation: number } {
  if (buf.length < HEADER || buf[4] !== FrameKind.Generation) return { frames: [], generation: 0 };
  const generation = Number(buf.readBigUInt64LE(5));
  return { frames: [...framesOf(buf, generation)], generation };
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
  const logs = [0, 1].map((i) => {
    const file = logPath(stateDir, i);
    return fs.existsSync(file) ? framesOfLog(fs.readFileSync(file)) : { frames: [], generation: 0 };
  });
  logs.sort((a, b) => a.generation - b.generation);
  return { frames: logs.flatMap((l) => l.frames), generation: Math.max(...logs.map((l) => l.generation)) };
}

export interface CaptureLogs {
  logFds: [number, number];
  active: 0;
  generation: number;
}

/** Both logs emptied (their frames are in the journal, on stable storage), log 0 active at a new generation. */
export function startCaptureLogs(stateDir: string, generation: number): CaptureLogs {
  const fds = [0, 1].map((i) => fs.openSync(logPath(stateDir, i), fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o600)) as [number, number];
  for (const fd of fds) fs.ftruncateSync(fd, 0);
  fs.writeSync(fds[0], encodeFrame(FrameKind.Generation, generation, generation));
  for (const fd of fds) fs.fdatasyncSync(fd);
  const dir = fs.openSync(stateDir, 'r');
  try {
    fs.fsyncSync(dir);
  } finally {
    fs.closeSync(dir);
  }
  return { logFds: fds, active: 0, generation };
}
