// The capture logs (<state>/capture-0.log, capture-1.log): the write-ahead log of the native binding, which
// appends every entry there before its operation runs (native/capture.c). After a crash they are read back into
// the journal; then they start over.
import fs from 'node:fs';
import path from 'node:path';

/** Frame kinds, as native/capture.h numbers them. */
export const FrameKind = { Entry: 0, Done: 1, Captured: 2, Generation: 3, Checkpoint: 4 } as const;
const HEADER = 13;

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

/** One frame as native/capture.c lays it out (the tests write logs with it too). */
export function encodeFrame(kind: number, seq: number, body: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(HEADER);
  header.writeUInt32LE(body.length, 0);
  header[4] = kind;
  header.writeBigUInt64LE(BigInt(seq), 5);
  return Buffer.concat([header, body]);
}

/** Frames in `buf`, up to the first torn one (a crash in the middle of an append). */
export function* framesOf(buf: Buffer): Generator<Frame> {
  for (let at = 0; at + HEADER <= buf.length;) {
    const len = buf.readUInt32LE(at);
    if (at + HEADER + len > buf.length) return;
    yield { kind: buf[at + 4]!, seq: Number(buf.readBigUInt64LE(at + 5)), body: buf.subarray(at + HEADER, at + HEADER + len) };
    at += HEADER + len;
  }
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
    const frames = fs.existsSync(file) ? [...framesOf(fs.readFileSync(file))] : [];
    return { frames, generation: frames[0]?.kind === FrameKind.Generation ? frames[0].seq : 0 };
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
  const fds = [0, 1].map((i) => fs.openSync(logPath(stateDir, i), fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_APPEND, 0o600)) as [number, number];
  for (const fd of fds) fs.ftruncateSync(fd, 0);
  fs.writeSync(fds[0], encodeFrame(FrameKind.Generation, generation));
  for (const fd of fds) fs.fdatasyncSync(fd);
  const dir = fs.openSync(stateDir, 'r');
  try {
    fs.fsyncSync(dir);
  } finally {
    fs.closeSync(dir);
  }
  return { logFds: fds, active: 0, generation };
}
