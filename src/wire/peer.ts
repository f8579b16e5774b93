// One framed, heartbeated connection to a peer; both primary and backup speak through it.
import type { Socket } from 'node:net';
import { ProtocolError } from '../errors.js';
import { FrameReader, FrameType, frameHeader, packBody, unpackBody, type Frame } from './frame.js';

export interface PeerOptions {
  /** How often to send a ping when nothing else was sent. */
  heartbeatMs: number;
  /** Silence after which the peer counts as dead. */
  deadAfterMs: number;
}

export const DEFAULT_PEER_OPTIONS: PeerOptions = { heartbeatMs: 1000, deadAfterMs: 5000 };

export class PeerConnection {
  readonly peer: string;
  closed = false;
  closeReason: Error | undefined;
  private readonly reader = new FrameReader();
  private readonly queue: Frame[] = [];
  private waiter: ((f: Frame | undefined) => void) | undefined;
  private lastHeard = Date.now();
  private lastSent = Date.now();
  private readonly timer: NodeJS.Timeout;
  private readonly closeHandlers: Array<(reason: Error | undefined) => void> = [];

  constructor(readonly socket: Socket, private readonly opts: PeerOptions = DEFAULT_PEER_OPTIONS) {
    this.peer = `${socket.remoteAddress}:${socket.remotePort}`;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.close(err));
    socket.on('close', () => this.close());
    this.timer = setInterval(() => this.tick(), Math.min(opts.heartbeatMs, 500));
    this.timer.unref();
  }

  onClose(handler: (reason: Error | undefined) => void): void {
    this.closeHandlers.push(handler);
  }

  send(type: FrameType, value: unknown): void {
    this.sendParts(type, [packBody(value)]);
  }

  /**
   * Sends one frame whose body is the parts back to back (no copy into one buffer). `written` is called once the
   * socket holds none of the parts any more: sent, or the connection failed.
   */
  sendParts(type: FrameType, parts: Buffer[], written?: () => void): void {
    if (this.closed) return written?.();
    this.socket.cork();
    this.socket.write(frameHeader(type, parts));
    const last = parts.length - 1;
    for (const [i, p] of parts.entries()) this.socket.write(p, i === last ? written : undefined);
    this.socket.uncork();
    this.lastSent = Date.now();
  }

  /** Resolves once the socket's send buffer is below its high-water mark (or the connection closed). */
  drained(): Promise<void> {
    if (!this.socket.writableNeedDrain || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  /** The next frame that is not a ping; undefined once the connection is closed. Rejects on timeout. */
  read(timeoutMs?: number): Promise<Frame | undefined> {
    const next = this.queue.shift();
    if (next) return Promise.resolve(next);
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const timer = timeoutMs === undefined ? undefined : setTimeout(() => {
        this.waiter = undefined;
        reject(new ProtocolError(`no answer from ${this.peer} within ${timeoutMs} ms`, { peer: this.peer }));
      }, timeoutMs);
      this.waiter = (f) => {
        if (timer) clearTimeout(timer);
        resolve(f);
      };
    });
  }

  /** What the peer said in an Error, Refused or Fenced frame: the best reason, whatever socket error follows it. */
  private peerSaid: string | undefined;

  /** The next frame already received, without waiting, if it is of `type`. */
  poll(type: FrameType): Frame | undefined {
    return this.queue[0]?.type === type ? this.queue.shift() : undefined;
  }

  /** Sends `message` in an Error, Refused or Fenced frame, then half-closes so the peer reads it before any write fails. */
  refuse(type: FrameType.Error | FrameType.Refused | FrameType.Fenced, message: string, reason?: Error, extra: Record<string, unknown> = {}): void {
    this.send(type, { ...extra, message });
    this.end(reason);
  }

  /** Ends the connection once what was sent is out (closed after a second at the latest). */
  end(reason?: Error): void {
    this.socket.end();
    setTimeout(() => this.close(reason), 1000).unref();
  }

  close(reason?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = this.peerSaid ? new ProtocolError(`peer ${this.peer} reported: ${this.peerSaid}`, { peer: this.peer }) : reason;
    clearInterval(this.timer);
    this.socket.destroy();
    const w = this.waiter;
    this.waiter = undefined;
    w?.(undefined);
    for (const h of this.closeHandlers) h(reason);
  }

  private onData(chunk: Buffer): void {
    this.lastHeard = Date.now();
    let frames: Frame[];
    try {
      frames = this.reader.push(chunk);
    } catch (err) {
      this.close(err as Error);
      return;
    }
    for (const f of frames) {
      if (f.type === FrameType.Ping) continue;
      if (f.type === FrameType.Error || f.type === FrameType.Refused || f.type === FrameType.Fenced) {
        this.peerSaid = String(unpackBody<{ message?: unknown }>(f).message);
      }
      const w = this.waiter;
      if (w) {
        this.waiter = undefined;
        w(f);
      } else {
        this.queue.push(f);
      }
    }
  }

  private tick(): void {
    const now = Date.now();
    if (now - this.lastHeard > this.opts.deadAfterMs) {
      this.close(new ProtocolError(`peer ${this.peer} silent for ${now - this.lastHeard} ms`, { peer: this.peer }));
      return;
    }
    if (now - this.lastSent >= this.opts.heartbeatMs) this.sendParts(FrameType.Ping, [Buffer.alloc(0)]);
  }
}
