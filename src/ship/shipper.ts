// Ships the journal to the backup: connects over the first route that answers, authenticates both ways,
// resumes from the backup's applied seq, streams batches with a bounded window, and trims on each ack.
import net from 'node:net';
import tls from 'node:tls';
import { setTimeout as delay } from 'node:timers/promises';
import { AuthError, FencedError, ProtocolError } from '../errors.js';
import type { Generation } from '../failover/generation.js';
import type { EventLog } from '../admin/events.js';
import type { Logger } from '../log.js';
import type { EncodedEntry, Journal } from '../journal/journal.js';
import { newNonce, proof, proofMatches } from '../wire/auth.js';
import type { TlsMaterial } from '../wire/tls.js';
import { COPY_BELOW, encodeBatch, FrameType, PROTOCOL_VERSION, unpackBody, type Frame } from '../wire/frame.js';
import type { Ack, Answer, Challenge, Fenced, Promoted, QueryBody, Refusal, Welcome } from '../wire/messages.js';
import { DEFAULT_PEER_OPTIONS, PeerConnection, type PeerOptions } from '../wire/peer.js';
import type { Route } from './routes.js';

export interface ShipperOptions {
  routes: Route[];
  secret: Buffer;
  tls?: TlsMaterial;
  log: Logger;
  /** Connections, losses and route switches are also operator events. */
  events?: EventLog;
  peer?: PeerOptions;
  /** This site's epoch and lineage, sent in every Hello. */
  generation: Generation;
  /** A backup at a newer epoch refused us: shipping stops for good (the caller fences the mount). */
  onFenced?: (err: FencedError) => void;
  /**
   * Whether the backup may defer its flushes (asked for with Flush when a caller waits for durability): for a primary
   * in async mode. In sync mode every fsync waits for one, and each group is flushed at once as before.
   */
  deferredFlush?: boolean;
}

const CONNECT_MS = 5000;
const HANDSHAKE_MS = 10_000;
const BATCH_BYTES = 1024 * 1024;
const BATCH_ENTRIES = 4096;
/** What a batch's small entries and lengths take at most (see encodeBatch): a read stops past BATCH_BYTES. */
const BATCH_COPY_BYTES = BATCH_BYTES + COPY_BELOW + 4 * (BATCH_ENTRIES + 1);
/** Batch buffers kept for reuse: a new one each batch would weigh on V8's count of external memory. */
const SPARE_BATCH_BUFFERS = 4;
/** Unacknowledged bytes on the wire before the shipper waits for acks. */
const WINDOW_BYTES = 64 * 1024 * 1024;
/**
 * After a batch the backup made durable before it answered (a checkpoint: names changed, its files and directories
 * flushed), the next partial batch goes no sooner than this after it: sent at the answer, it would carry only what
 * came in meanwhile, and cost the backup another checkpoint. With the backup on the same two cores, the metadata
 * loop ran 25-30% faster and the backup spent 40% less CPU; 5 ms against 2, with entries taken in every 3 ms (see
 * the journal's INGEST_DELAY_MS): 6-13% faster again, the backup's CPU an operation 12-26% less. Batches the backup
 * answers at once and flushes later (plain writes) go as soon as they are taken in, and so does any batch while a
 * writer waits for durability (sync mode, drms sync, sync-class files).
 */
export const CHECKPOINT_GAP_MS = 5;
/** While on an alternate route, how often to knock on the preferred one. */
const PREFERRED_PROBE_MS = 2000;
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5000;

export class Shipper {
  connected = false;
  route: Route | undefined;
  peer: string | undefined;
  lastError: string | undefined;
  reconnects = 0;
  routeSwitches = 0;
  /** The backup's epoch, from its last Welcome. */
  peerEpoch: number | undefined;
  private stopping = false;
  private conn: PeerConnection | undefined;
  private loop: Promise<void> | undefined;
  private readonly wake = new Wakeup();
  /** False while a batch is in flight: new entries wait for its ack anyway, so each commit need not wake us. */
  private commitsWanted = true;
  private readonly stopped = new AbortController();
  private readonly queries: PendingRequest[] = [];
  private nextQueryId = 1;
  /** Buffers of batches the socket has written, for the next ones to copy their small entries into. */
  private readonly spareBatchBuffers: Buffer[] = [];

  constructor(private readonly journal: Journal, private opts: ShipperOptions) {
    journal.on('committed', () => {
      if (this.commitsWanted) this.wake.notify();
    });
    journal.on('acked', () => this.wake.notify());
    journal.on('durable-wanted', () => this.wake.notify());
  }

  start(): void {
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.stopped.abort();
    this.conn?.close();
    this.wake.notify();
    await this.loop;
  }

  /**
   * Asks the backup about its tree as of the journal's current end: the question travels in the batch stream
   * after every entry journaled so far, so the answer reflects them and nothing later. Rejects with QueryError
   * if the connection is lost before the answer.
   */
  query<T>(q: QueryBody): Promise<T> {
    return this.request<T>(FrameType.Query, q, `${q.kind} ${q.path}`);
  }

  /**
   * A planned switchover: asks the backup to take over at `epoch` once it has applied every entry journaled so
   * far (the caller holds mutations back). Resolves with the new primary's journal id once its mount serves.
   */
  promote(epoch: number, timeoutMs: number): Promise<{ journalId: string }> {
    const answer = this.request<Promoted>(FrameType.Promote, { epoch }, `promote to epoch ${epoch}`);
    const id = this.nextQueryId - 1;
    const late = delay(timeoutMs, undefined, { ref: false }).then(() => {
      // Not sent yet: it must never be (a switchover abandoned here cannot happen later by surprise).
      const i = this.queries.findIndex((q) => q.body.id === id && !q.sent);
      if (i >= 0) this.queries.splice(i, 1);
      throw new QueryError(`the backup did not answer within ${timeoutMs} ms`);
    });
    return Promise.race([answer, late]).then((p) => {
      if (p.error !== undefined || !p.journalId) throw new QueryError(`the backup did not take over: ${p.error ?? 'no journal id in its answer'}`);
      return { journalId: p.journalId };
    });
  }

  private request<T>(type: FrameType.Query | FrameType.Promote, body: object, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queries.push({ type, afterSeq: this.journal.lastSeq, body: { ...body, id: this.nextQueryId++ }, what, sent: false, resolve: resolve as (r: unknown) => void, reject });
      this.wake.notify();
    });
  }

  /** New routes or credentials (configuration reload): the current session ends and the next uses them. */
  reconfigure(changes: Pick<ShipperOptions, 'routes' | 'secret' | 'tls'>): void {
    this.opts = { ...this.opts, ...changes };
    this.conn?.close(new SessionRestart('configuration reloaded'));
  }

  /** Waits until the backup has applied everything journaled so far. */
  drain(timeoutMs: number): Promise<boolean> {
    return this.journal.waitAcked(this.journal.lastSeq, timeoutMs).then(() => true, () => false);
  }

  /** Routes are tried in order; after any session that got to stream, the next try starts at the preferred one. */
  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      let progressed = false;
      for (const route of this.opts.routes) {
        if (this.stopping) break;
        const r = await this.session(route);
        if (r.streamed) {
          progressed = r.progressed;
          break;
        }
      }
      failures = progressed ? 0 : failures + 1;
      await delay(backoff(failures), undefined, { signal: this.stopped.signal }).catch(() => undefined);
    }
  }

  /** One connection's life: whether it got to stream, and whether the backup acknowledged anything. */
  private async session(route: Route): Promise<{ streamed: boolean; progressed: boolean }> {
    const log = this.opts.log.child({ route: route.label });
    let socket: net.Socket;
    try {
      socket = await connect(route, this.opts.tls);
    } catch (err) {
      this.fail(log, err, 'cannot reach the backup');
      return { streamed: false, progressed: false };
    }
    const conn = new PeerConnection(socket, this.opts.peer ?? DEFAULT_PEER_OPTIONS);
    this.conn = conn;
    let streaming = false;
    let probe: NodeJS.Timeout | undefined;
    const ackedBefore = this.journal.ackedSeq;
    try {
      const { from, deferredFlush } = await this.handshake(conn);
      streaming = true;
      if (this.route && this.route !== route) {
        this.routeSwitches++;
        this.note(log, 'route-switched', 'route switched', { from: this.route.label, route: route.label, peer: conn.peer }, 'warn');
      }
      this.connected = true;
      this.route = route;
      this.peer = conn.peer;
      this.lastError = undefined;
      this.reconnects++;
      this.note(log, 'connected', 'connected to backup; shipping', { route: route.label, peer: conn.peer, seq: from }, 'info');
      const preferred = this.opts.routes[0]!;
      if (route !== preferred) probe = setInterval(() => void this.probe(preferred, conn, log), PREFERRED_PROBE_MS);
      await this.stream(conn, from, deferredFlush);
      if (!this.stopping && !(conn.closeReason instanceof SessionRestart)) {
        throw conn.closeReason ?? new ProtocolError('the backup closed the connection', { peer: conn.peer });
      }
    } catch (err) {
      // Only a site at a newer epoch can fence this one; any other such answer is a fault, and is retried.
      if (err instanceof FencedError && err.epoch > this.opts.generation.epoch) {
        this.stopping = true;
        this.lastError = `fenced: ${err.message}`;
        this.opts.onFenced?.(err);
      }
      this.fail(log, err, streaming ? 'backup connection lost' : 'backup handshake failed');
      if (streaming && !this.stopping) this.opts.events?.emit('disconnected', `backup connection lost: ${(err as Error).message}`, { route: route.label, peer: conn.peer }, 'warn');
    } finally {
      clearInterval(probe);
      conn.close();
      this.conn = undefined;
      this.connected = false;
      // Answers to questions already sent will not come; questions not sent yet wait for the next session.
      for (let i = this.queries.length - 1; i >= 0; i--) {
        const q = this.queries[i]!;
        if (!q.sent) continue;
        this.queries.splice(i, 1);
        q.reject(new QueryError(`the connection to the backup was lost before it answered (${q.what})`));
      }
    }
    return { streamed: streaming, progressed: this.journal.ackedSeq > ackedBefore };
  }

  /** If the preferred route answers again, end the session on the alternate one; run() then starts over. */
  private async probe(preferred: Route, conn: PeerConnection, log: Logger): Promise<void> {
    const socket = await connect(preferred, this.opts.tls).catch(() => undefined);
    if (!socket) return;
    socket.destroy();
    log.info({ preferred: preferred.label }, 'preferred route answers again; switching back');
    conn.close(new SessionRestart('the preferred route answers again'));
  }

  /** An operator event when there is an event log, else a log line (same message either way). */
  private note(log: Logger, kind: string, msg: string, fields: Record<string, unknown>, level: 'info' | 'warn'): void {
    if (this.opts.events) this.opts.events.emit(kind, msg, fields, level);
    else log[level](fields, msg);
  }

  private fail(log: Logger, err: unknown, msg: string): void {
    if (this.stopping) return;
    this.lastError = `${msg}: ${(err as Error).message}`;
    log[err instanceof AuthError ? 'error' : 'warn']({ err }, msg);
  }

  /** Mutual challenge-response; returns the first seq to send, and whether the backup defers its flushes. */
  private async handshake(conn: PeerConnection): Promise<{ from: number; deferredFlush: boolean }> {
    const nonce = newNonce();
    const { epoch, lineage } = this.opts.generation;
    conn.send(FrameType.Hello, { version: PROTOCOL_VERSION, nonce, journalId: this.journal.id, epoch, lineage, flushes: this.opts.deferredFlush === true });
    const challenge = unpackBody<Challenge>(expectFrame(await conn.read(HANDSHAKE_MS), FrameType.Challenge, conn));
    if (!proofMatches(proof(this.opts.secret, 'backup', nonce, challenge.nonce), challenge.proof)) {
      conn.send(FrameType.Refused, { message: 'the backup failed authentication: the shared secrets differ' });
      throw new AuthError(`backup at ${conn.peer} failed authentication: wrong shared secret (or not a drms backup)`, { peer: conn.peer });
    }
    conn.send(FrameType.Auth, { proof: proof(this.opts.secret, 'primary', challenge.nonce, nonce) });
    const welcome = unpackBody<Welcome>(expectFrame(await conn.read(HANDSHAKE_MS), FrameType.Welcome, conn));
    this.peerEpoch = welcome.epoch;
    const applied = welcome.appliedSeq;
    if (applied > this.journal.lastSeq) {
      throw new ProtocolError(`backup reports seq ${applied} applied but this journal ends at ${this.journal.lastSeq}: is --state the right directory?`, { peer: conn.peer });
    }
    if (applied + 1 < this.journal.firstSeq()) {
      throw new ProtocolError(`backup has applied up to seq ${applied} but the journal now starts at ${this.journal.firstSeq()}: a full resync is needed`, { peer: conn.peer });
    }
    this.journal.resumed(applied);
    return { from: applied + 1, deferredFlush: welcome.deferredFlush === true };
  }

  /**
   * Sends the journal from `from` on. A backup that defers its flushes acknowledges entries as applied at once and
   * as durable later; when a caller waits for durability (a sync-class file, drms sync) it is asked for a flush, once the
   * entry waited for has been sent.
   */
  private async stream(conn: PeerConnection, from: number, deferredFlush: boolean): Promise<void> {
    const inflight: Array<{ last: number; bytes: number; sentAt: number }> = [];
    let inflightBytes = 0;
    /** When the last batch answered was sent, if the backup made it durable before it answered (else 0). */
    let checkpointed = 0;
    const reader = (async () => {
      for (;;) {
        const frame = await conn.read();
        if (!frame) return;
        if (frame.type === FrameType.Ack) {
          const { appliedSeq, replayedSeq } = unpackBody<Ack>(frame);
          this.journal.setReplayed(replayedSeq ?? 0);
          this.journal.setAcked(appliedSeq);
          const applied = Math.max(appliedSeq, replayedSeq ?? 0);
          while (inflight.length && inflight[0]!.last <= applied) {
            const done = inflight.shift()!;
            inflightBytes -= done.bytes;
            checkpointed = appliedSeq >= done.last ? done.sentAt : 0;
          }
          this.wake.notify(); // also when the ack moved nothing (a batch of entries the backup already had)
        } else if (frame.type === FrameType.Answer || frame.type === FrameType.Promoted) {
          const a = unpackBody<Answer | Promoted>(frame);
          const i = this.queries.findIndex((q) => q.sent && q.body.id === a.id);
          if (i < 0) continue;
          const [q] = this.queries.splice(i, 1);
          if (frame.type === FrameType.Promoted) q!.resolve(a);
          else if (a.error !== undefined) q!.reject(new QueryError(`the backup could not answer (${q!.what}): ${a.error}`));
          else q!.resolve((a as Answer).result);
        } else {
          // An Error frame's message becomes the close reason (PeerConnection keeps what the peer said).
          conn.close(new ProtocolError(`unexpected ${FrameType[frame.type]} frame from the backup`, { peer: conn.peer }));
        }
      }
    })();
    conn.onClose(() => this.wake.notify());
    let next = from;
    // Entries read but not sent yet. A full batch goes at once (up to the window); a partial one only when nothing
    // is in flight, so entries arriving while the backup applies and flushes ride together in the next batch:
    // one backup flush for many small writes, and a steady stream when catching up.
    let pending: EncodedEntry[] = [];
    let pendingBytes = 0;
    let flushAsked = 0;
    // Right behind the batch with the entry waited for, so that the backup flushes that group at once.
    const askFlush = () => {
      const wanted = this.journal.durableWanted;
      if (!deferredFlush || wanted <= flushAsked || wanted >= next || wanted <= this.journal.ackedSeq) return;
      flushAsked = wanted;
      conn.send(FrameType.Flush, {});
    };
    while (!conn.closed && !this.stopping) {
      askFlush();
      // A question goes between the entries before it and those after: batches stop at its seq.
      const question = this.queries.find((q) => !q.sent);
      if (question && pending.length === 0 && next > question.afterSeq) {
        question.sent = true;
        conn.send(question.type, question.body);
        continue;
      }
      const limit = question ? question.afterSeq : Infinity;
      const full = () => pendingBytes >= BATCH_BYTES || pending.length >= BATCH_ENTRIES;
      if (!full() && inflightBytes < WINDOW_BYTES) {
        const after = pending.length ? pending[pending.length - 1]!.seq + 1 : next;
        for (const e of this.journal.read(after, BATCH_BYTES - pendingBytes, BATCH_ENTRIES - pending.length, limit)) {
          pending.push(e);
          pendingBytes += e.bytes.length;
        }
      }
      const questionWaits = question !== undefined && pending.length > 0 && pending[pending.length - 1]!.seq >= limit;
      if (pending.length === 0 || inflightBytes >= WINDOW_BYTES || (!full() && !questionWaits && inflight.length > 0)) {
        this.commitsWanted = inflight.length === 0;
        await this.wake.wait();
        this.commitsWanted = true;
        continue;
      }
      const wait = checkpointed + CHECKPOINT_GAP_MS - performance.now();
      if (wait > 0 && !full() && !questionWaits && this.journal.durableWanted <= this.journal.ackedSeq) {
        const timer = setTimeout(() => this.wake.notify(), wait);
        await this.wake.wait();
        clearTimeout(timer);
        continue;
      }
      checkpointed = 0;
      const into = this.spareBatchBuffers.pop() ?? Buffer.allocUnsafe(BATCH_COPY_BYTES);
      const parts = encodeBatch(pending.map((e) => e.bytes), into);
      const bytes = parts.reduce((n, p) => n + p.length, 0);
      // Reused once the socket has written it, not before: its writes may still be queued after drained().
      conn.sendParts(FrameType.Batch, parts, () => {
        if (this.spareBatchBuffers.length < SPARE_BATCH_BUFFERS) this.spareBatchBuffers.push(into);
      });
      next = pending[pending.length - 1]!.seq + 1;
      askFlush();
      pending = [];
      pendingBytes = 0;
      inflight.push({ last: next - 1, bytes, sentAt: performance.now() });
      inflightBytes += bytes;
      // Let the socket drain before reading more: the backup gets a steady stream, not one burst per window.
      await conn.drained();
    }
    await reader;
  }
}

/** Ends a healthy session on purpose (preferred route back, new settings); run() starts the next at once. */
class SessionRestart extends Error {}

function expectFrame(frame: Frame | undefined, type: FrameType, conn: PeerConnection): Frame {
  if (!frame) throw new ProtocolError('backup closed the connection during the handshake (is TLS configured alike on both sides?)', { peer: conn.peer });
  if (frame.type === FrameType.Refused || frame.type === FrameType.Error) {
    throw new AuthError(`backup refused the connection: ${unpackBody<Refusal>(frame).message}`, { peer: conn.peer });
  }
  if (frame.type === FrameType.Fenced) {
    const f = unpackBody<Fenced>(frame);
    throw new FencedError(f.message, f.epoch, { peer: conn.peer });
  }
  if (frame.type !== type) throw new ProtocolError(`expected ${FrameType[type]}, got ${FrameType[frame.type]}`, { peer: conn.peer });
  return frame;
}

/** TCP, or mutual TLS when configured: the backup must present a certificate signed by our CA. */
function connect(route: Route, material?: TlsMaterial): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = material
      ? tls.connect({ host: route.host, port: route.port, ...material, servername: net.isIP(route.host) ? undefined : route.host, minVersion: 'TLSv1.2' })
      : net.connect({ host: route.host, port: route.port });
    const timer = setTimeout(() => socket.destroy(new Error(`connect timed out after ${CONNECT_MS} ms`)), CONNECT_MS);
    socket.once(material ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer);
      socket.removeListener('error', reject);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Capped exponential backoff with full jitter. */
function backoff(failures: number): number {
  const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(failures, 10));
  return BACKOFF_MIN_MS / 2 + Math.random() * cap;
}

/** A question (or a switchover) for the backup, to be sent once every entry up to `afterSeq` is sent. */
interface PendingRequest {
  type: FrameType.Query | FrameType.Promote;
  afterSeq: number;
  body: { id: number };
  what: string;
  sent: boolean;
  resolve: (result: unknown) => void;
  reject: (err: Error) => void;
}

/** The backup could not answer a query (connection lost, or it refused the question). */
export class QueryError extends Error {}

/** A level-triggered wake-up: notify() before wait() is not lost. */
class Wakeup {
  private pending = false;
  private resolve: (() => void) | undefined;

  notify(): void {
    const r = this.resolve;
    this.resolve = undefined;
    if (r) r();
    else this.pending = true;
  }

  wait(): Promise<void> {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((r) => (this.resolve = r));
  }

}
