// The backup server: authenticates the primary, applies its batches strictly in seq order, acknowledges durably applied seqs.
import net from 'node:net';
import tls from 'node:tls';
import { ApplyError, AuthError, FencedError, PathEscapeError, ProtocolError } from '../errors.js';
import type { Activity } from '../admin/activity.js';
import type { EventLog } from '../admin/events.js';
import type { Logger } from '../log.js';
import { decodeEntry, type JournalEntry } from '../journal/entry.js';
import { newNonce, proof, proofMatches } from '../wire/auth.js';
import type { TlsMaterial } from '../wire/tls.js';
import { decodeBatch, releaseFrame, FrameType, PROTOCOL_VERSION, unpackBody, type Frame } from '../wire/frame.js';
import { DEFAULT_PEER_OPTIONS, PeerConnection, type PeerOptions } from '../wire/peer.js';
import type { Ack, Answer, Auth, Hello, Promote, Promoted, Query, Refusal } from '../wire/messages.js';
import { readGeneration, writeGeneration, type Generation } from '../failover/generation.js';
import { quarantineDivergence } from '../failover/quarantine.js';
import { blockSums, describe } from '../verify/manifest.js';
import { namesExist } from '../fs/native.js';
import { Serializer } from '../fs/serial.js';
import { Applier, writeRun, type WriteEntry } from './applier.js';
import { redoable, supersededStamps } from './redo-log.js';
import { withoutShortLived } from './short-lived.js';
import { BackupState, type AppliedState } from './state.js';

export interface BackupOptions {
  listen: { host: string; port: number };
  target: string;
  stateDir: string;
  secret: Buffer;
  tls?: TlsMaterial;
  log: Logger;
  /** Applied operations are counted here (metrics, report); sessions and apply errors are events. */
  activity?: Activity;
  events?: EventLog;
  peer?: PeerOptions;
  /**
   * A planned switchover asks this backup to take over at `epoch` (everything before it applied). Resolves with
   * the new primary's journal id once its mount serves; rejects (nothing changed) when it cannot.
   */
  onPromote: (epoch: number) => Promise<{ journalId: string }>;
  /** How long applied plain writes may wait for the redo log's flush, and so their durable acknowledgement (0: none). */
  flushDelayMs?: number;
}

const HANDSHAKE_MS = 10_000;
/** Most bytes applied between two flushes of the backup. */
const GROUP_BYTES = 32 * 1024 * 1024;
/**
 * How long a group of plain writes waits for its redo log flush by default: the primary hears at once that they are
 * applied (replication lag), and that they are durable with the groups that follow within this time, or at once when
 * it waits for durability (drms sync, a sync-class file) and asks; it keeps them until then. With 1 writer, the backup
 * on the same two cores and disk, a flush a group (about a thousand a second) cost the primary 11% of its records/s;
 * a flush every 5 ms against every 25, 11 alternating pairs of 4 s: 4,289-5,339 records/s against 5,313-6,233.
 */
export const FLUSH_DELAY_MS = 25;

/** An authenticated session: its connection, the primary's journal, and whether its flushes may be deferred. */
interface Session {
  conn: PeerConnection;
  journalId: string;
  deferFlush: boolean;
}

export class BackupServer {
  readonly applier: Applier;
  private readonly state: BackupState;
  /** Applied and durable: what the primary hears as appliedSeq, and where a new session resumes. */
  private applied: AppliedState;
  /** Applied to the files, durable once the redo log's deferred flush runs (at or ahead of `applied`). */
  private replayed: AppliedState;
  /** The redo log's flush that is due, and the session that waits for its acknowledgement. */
  private deferred: { session: Session; timer: NodeJS.Timeout } | undefined;
  private readonly flushDelayMs: number;
  private readonly server: net.Server;
  private active: PeerConnection | undefined;
  /** Batches from an old and a new session never interleave. */
  private readonly batches = new Serializer();
  lastError: string | undefined;
  /** When the batch being applied started (0: idle), for the watchdog. */
  applyingSince = 0;
  generation: Generation;
  /** The connected primary's epoch. */
  peerEpoch: number | undefined;
  /** Set once this site is no longer a backup (promoted): every primary is refused with this reason. */
  private fencedBy: { epoch: number; message: string } | undefined;

  constructor(private readonly opts: BackupOptions) {
    this.state = BackupState.open(opts.stateDir);
    this.applied = this.state.get();
    this.replayed = this.applied;
    this.flushDelayMs = opts.flushDelayMs ?? FLUSH_DELAY_MS;
    this.generation = readGeneration(opts.stateDir);
    this.applier = new Applier(opts.target, opts.log, this.state.staging());
    this.applier.resyncing = this.applied.resyncing;
    const accept = (socket: net.Socket) => void this.session(socket);
    if (opts.tls) {
      this.server = tls.createServer({ ...opts.tls, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' }, accept);
      this.server.on('tlsClientError', (err, socket) => {
        this.lastError = `TLS handshake refused: ${err.message}`;
        opts.log.error({ peer: `${socket.remoteAddress}:${socket.remotePort}`, err }, 'TLS handshake refused: the peer has no certificate this backup trusts, or does not speak TLS');
      });
    } else {
      this.server = net.createServer(accept);
    }
  }

  /** What this site has applied: the journal, and up to which seq (where a promotion forks). */
  get appliedState(): AppliedState {
    return this.applied;
  }

  /**
   * This site stops being a backup: every primary that connects from now on is refused with `message`. The current
   * session ends too, unless it is the one that asked (a switchover, answered on it).
   */
  fence(epoch: number, message: string, endSession: boolean): void {
    this.fencedBy = { epoch, message };
    if (endSession) this.active?.close(new FencedError(message, epoch));
  }

  get appliedSeq(): number {
    return this.applied.appliedSeq;
  }

  get journalId(): string | undefined {
    return this.applied.journalId;
  }

  get peer(): string | undefined {
    return this.active?.peer;
  }

  listen(): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.listen.port, this.opts.listen.host, () => resolve(this.server.address() as net.AddressInfo));
    });
  }

  async close(): Promise<void> {
    this.active?.close();
    await new Promise((r) => this.server.close(r));
    await this.flushed();
    await this.applier.close();
    await this.state.close();
  }

  private async session(socket: net.Socket): Promise<void> {
    const conn = new PeerConnection(socket, this.opts.peer ?? DEFAULT_PEER_OPTIONS);
    const log = this.opts.log.child({ peer: conn.peer });
    try {
      const session = await this.handshake(conn);
      const { journalId } = session;
      log.info({ journalId, appliedSeq: this.appliedSeq }, 'primary authenticated');
      this.opts.events?.emit('connected', `primary connected from ${conn.peer}`, { peer: conn.peer, seq: this.appliedSeq });
      if (this.active) this.active.close(new ProtocolError('replaced by a newer session from the primary'));
      this.active = conn;
      for (;;) {
        const frame = await conn.read();
        if (!frame) break;
        if (frame.type === FrameType.Query) await this.batches.run(() => this.answer(frame, conn));
        else if (frame.type === FrameType.Promote) {
          if (!(await this.batches.run(() => this.promote(frame, conn)))) continue;
          // Taken over: this process serves the mount over the target, which its own thread must never touch (it
          // would wait on itself forever), and what the old primary sent after its Promote (a close's times) is past
          // where the new lineage starts. Nothing more of this session is applied: it ends, once the answer is out.
          log.info({ epoch: this.generation.epoch }, 'took over: the old primary\'s session ends');
          conn.end();
          break;
        }
        else if (frame.type === FrameType.Flush) await this.batches.run(async () => this.flushDeferred(session));
        else await this.batches.run(() => this.applyBatches(frame, session));
      }
      if (conn.closeReason) log.warn({ err: conn.closeReason }, 'primary connection lost');
      else log.info('primary disconnected');
      this.opts.events?.emit('disconnected', `primary ${conn.peer} disconnected${conn.closeReason ? `: ${conn.closeReason.message}` : ''}`, { peer: conn.peer }, 'warn');
    } catch (err) {
      this.lastError = (err as Error).message;
      const level = err instanceof AuthError || err instanceof PathEscapeError || err instanceof FencedError ? 'error' : 'warn';
      log[level]({ err }, err instanceof FencedError ? 'stale primary refused (fenced)' : 'primary session ended');
      if (err instanceof FencedError) {
        this.opts.events?.emit('fenced-peer', `refused a stale primary at ${conn.peer}: ${err.message}`, { peer: conn.peer, epoch: err.epoch }, 'error');
        conn.refuse(FrameType.Fenced, err.message, err, { epoch: err.epoch });
      } else {
        conn.refuse(err instanceof AuthError ? FrameType.Refused : FrameType.Error, (err as Error).message, err as Error);
      }
    } finally {
      if (this.active === conn) this.active = undefined;
      // A deferred flush does not outlive its session: the next one is told where to resume from durable state.
      await this.batches.run(async () => {
        if (this.deferred?.session.conn === conn) this.flushDeferred();
      }).catch((err: unknown) => log.error({ err }, 'flushing the redo log failed: the primary resends what it held'));
    }
  }

  /**
   * Challenge-response in both directions, then the epochs; returns the primary's journal id, and whether this
   * session's flushes may be deferred (the primary asks for one when it waits for durability).
   */
  private async handshake(conn: PeerConnection): Promise<Session> {
    const hello = unpackBody<Hello>(expect(await conn.read(HANDSHAKE_MS), FrameType.Hello, conn));
    if (hello.version !== PROTOCOL_VERSION) throw new AuthError(`protocol version ${hello.version} is not supported (this backup speaks ${PROTOCOL_VERSION})`);
    if (!(hello.nonce instanceof Uint8Array) || typeof hello.journalId !== 'string' || !Number.isInteger(hello.epoch) || !Array.isArray(hello.lineage)) {
      throw new ProtocolError('malformed hello');
    }
    const nonce = newNonce();
    conn.send(FrameType.Challenge, { version: PROTOCOL_VERSION, nonce, proof: proof(this.opts.secret, 'backup', hello.nonce, nonce) });
    const auth = unpackBody<Auth>(expect(await conn.read(HANDSHAKE_MS), FrameType.Auth, conn));
    if (!proofMatches(proof(this.opts.secret, 'primary', nonce, hello.nonce), auth.proof)) {
      throw new AuthError(`primary at ${conn.peer} failed authentication: wrong shared secret`, { peer: conn.peer });
    }
    this.peerEpoch = hello.epoch;
    await this.checkEpoch(hello, conn);
    const sameJournal = this.applied.journalId === hello.journalId;
    if (!sameJournal && this.applied.journalId) {
      this.opts.log.warn({ journalId: hello.journalId, previous: this.applied.journalId }, 'primary has a new journal: the target will be rebuilt from its baseline');
    }
    const deferFlush = hello.flushes === true && this.flushDelayMs > 0;
    conn.send(FrameType.Welcome, { journalId: hello.journalId, appliedSeq: sameJournal ? this.applied.appliedSeq : 0, epoch: this.generation.epoch, deferredFlush: deferFlush });
    return { conn, journalId: hello.journalId, deferFlush };
  }

  /**
   * Fencing: a primary older than the epoch this site knows is refused, and told why. A newer one is adopted; if
   * this site was itself a primary (its journal is still here), what it journaled after the point where the new
   * primary's lineage left it never reached the new primary: it is quarantined before anything is applied.
   */
  private async checkEpoch(hello: Hello, conn: PeerConnection): Promise<void> {
    if (this.fencedBy) {
      if (hello.epoch <= this.fencedBy.epoch) throw new FencedError(this.fencedBy.message, this.fencedBy.epoch, { peer: conn.peer });
      // A primary newer than this site's own promotion: a switchover back to it is under way here; soon a backup answers.
      throw new ProtocolError(`this site is handing over to epoch ${hello.epoch} and is not a backup yet; try again`, { peer: conn.peer });
    }
    const g = this.generation;
    if (hello.epoch < g.epoch) {
      const fork = g.lineage.find((r) => r.journalId === hello.journalId);
      const where = fork?.endSeq !== undefined ? ` from its journal at seq ${fork.endSeq}; its writes after that seq were never replicated` : '';
      throw new FencedError(
        `this site is at epoch ${g.epoch}: a newer primary took over${where}. The primary at epoch ${hello.epoch} is stale and fenced: ` +
          'stop it and rejoin it as a backup (drms backup --target <its directory> --state <its state directory>), which quarantines its unreplicated writes',
        g.epoch, { peer: conn.peer },
      );
    }
    if (hello.epoch === g.epoch && JSON.stringify(hello.lineage) === JSON.stringify(g.lineage)) return;
    const quarantined = await quarantineDivergence(this.opts.stateDir, this.opts.target, hello.lineage, this.opts.log);
    if (quarantined) {
      this.opts.events?.emit('quarantined', `${quarantined.entries.length} unreplicated operation(s) from this site's time as primary quarantined in ${quarantined.dir}`,
        { path: quarantined.dir, entries: quarantined.entries.length, files: quarantined.files.length, journalId: quarantined.journalId, seq: quarantined.fromSeq }, 'error');
    }
    if (hello.epoch > g.epoch) this.opts.log.warn({ epoch: hello.epoch, previous: g.epoch, peer: conn.peer }, 'primary at a newer epoch: adopted');
    this.generation = { epoch: hello.epoch, lineage: hello.lineage };
    writeGeneration(this.opts.stateDir, this.generation);
  }

  /** A planned switchover: everything before this frame is applied and durable; take over as primary. True if taken. */
  private async promote(frame: Frame, conn: PeerConnection): Promise<boolean> {
    const req = unpackBody<Promote>(frame);
    const answer = (body: Omit<Promoted, 'id' | 'epoch'>) => conn.send(FrameType.Promoted, { id: req.id, epoch: req.epoch, ...body });
    if (req.epoch !== this.generation.epoch + 1) {
      answer({ error: `asked to take over at epoch ${req.epoch}, but this site is at epoch ${this.generation.epoch}` });
      return false;
    }
    try {
      await this.checkpoint();
      answer(await this.opts.onPromote(req.epoch));
      return true;
    } catch (err) {
      this.opts.log.error({ err, epoch: req.epoch }, 'switchover: could not take over');
      answer({ error: (err as Error).message });
      return false;
    }
  }

  /** Flushes the target's files and records `s`, the applied state they hold: the redo log starts over. */
  private async checkpoint(s = this.replayed): Promise<void> {
    await this.applier.sync();
    await this.state.save(s);
    this.applied = this.replayed = s; // only once durable: the next session's welcome tells the primary where to resume
  }

  /**
   * Flushes the redo log's records written since the last flush (deferred, or asked for by the primary's Flush) and
   * acknowledges them; `requester` is answered even when nothing was waiting.
   */
  private flushDeferred(requester?: Session): void {
    const to = requester ?? this.deferred?.session;
    this.flushLogged();
    if (to && !to.conn.closed) to.conn.send(FrameType.Ack, this.ack(to));
  }

  /** The redo log's records written since its last flush are made durable, and so what they applied. */
  private flushLogged(): void {
    if (this.deferred) clearTimeout(this.deferred.timer);
    this.deferred = undefined;
    const s = this.state.flushLogged();
    if (s) this.applied = s;
  }

  /** The deferred flush is due: it runs between batches; a failure ends the session (the primary resends). */
  private flushLater(): void {
    const conn = this.deferred?.session.conn;
    this.batches.run(async () => this.flushDeferred()).catch((err: Error) => {
      this.opts.log.error({ err, peer: conn?.peer }, 'flushing the redo log failed: the session ends, and the primary resends what it held');
      conn?.close(err);
    });
  }

  /** What a session hears: durable and (deferring its flushes) applied; nothing of another journal's. */
  private ack(session: Session): Ack {
    const ours = (s: AppliedState) => (s.journalId === session.journalId ? s.appliedSeq : 0);
    return session.deferFlush ? { appliedSeq: ours(this.applied), replayedSeq: ours(this.replayed) } : { appliedSeq: ours(this.applied) };
  }

  /** Everything applied is in the target's files on stable storage (before this site takes over as primary). */
  flushed(): Promise<void> {
    return this.batches.run(() => this.checkpoint());
  }

  /**
   * Applies again what only the redo log held (a power cut may have kept it from the files), then flushes them.
   * First, what a backup killed before its checkpoint left in the page cache is made durable, and recorded as applied
   * as far as its mark goes (the same boot): those entries are not applied again, and one sent again and found done
   * (an unlink's name already gone) is done for good. A backup calls it before it listens.
   */
  async recover(): Promise<void> {
    await this.applier.flushFilesystem();
    const marked = this.state.markedAhead();
    if (marked) {
      await this.checkpoint(marked);
      this.opts.log.info({ seq: marked.appliedSeq }, 'the backup was killed after applying entries it had not checkpointed: it resumes after them');
    }
    const entries = this.state.takeRedo();
    if (entries.length === 0) return;
    for (const e of entries) {
      await this.applier.apply(e).catch((err: Error) => {
        const p = 'path' in e ? e.path : undefined;
        throw new ApplyError(`seq ${e.seq} of the redo log (${e.op} ${p ?? ''}) could not be applied again: ${err.message}; the backup holds it acknowledged and starts once it can`, { seq: e.seq, path: p });
      });
    }
    await this.checkpoint();
    this.opts.log.info({ seq: this.applied.appliedSeq, count: entries.length }, 'entries of the redo log applied again');
  }

  /**
   * Applies a batch and every batch already queued behind it (up to GROUP_BYTES), then makes them durable,
   * records and acknowledges them once: a group commit, so catching up after an outage is not one flush per batch.
   * With `deferFlush` a group of plain writes is acknowledged as applied at once and flushed with the groups that
   * follow within the flush delay, unless the primary asked for a flush (a Flush frame among or behind the batches).
   */
  private async applyBatches(first: Frame, session: Session): Promise<void> {
    const { conn, journalId, deferFlush } = session;
    let applied = this.replayed.journalId === journalId ? this.replayed.appliedSeq : 0;
    const start = applied;
    this.applyingSince = Date.now();
    let whole = false;
    /** What was applied, for the redo log while every entry is redoable() (undefined: the files must be flushed). */
    let logged: Buffer[] | undefined = [];
    /** A Flush queued between or behind these batches: the group is made durable at once, with one answer. */
    let flushAsked = !deferFlush;
    const nextBatch = (): Frame | undefined => {
      while (conn.poll(FrameType.Flush)) flushAsked = true;
      return bytes < GROUP_BYTES ? conn.poll(FrameType.Batch) : undefined;
    };
    let bytes = 0;
    const frames: Frame[] = [];
    /** A transaction's writes are held (staged) until its commit: their entries are views of their batch. */
    let staged = false;
    try {
      for (let frame: Frame | undefined = first; frame; frame = nextBatch()) {
        if (frame.type !== FrameType.Batch) throw new ProtocolError(`unexpected ${FrameType[frame.type]} frame`, { peer: conn.peer });
        frames.push(frame);
        bytes += frame.body.length;
        // Decoded first, to know which stamps later ones set again; entries before an undecodable one still apply.
        const raws = decodeBatch(frame.body);
        const entries: JournalEntry[] = [];
        let undecodable: Error | undefined;
        for (const raw of raws) {
          try {
            entries.push(decodeEntry(raw));
          } catch (err) {
            undecodable = err as Error;
            break;
          }
        }
        // Short-lived files (see withoutShortLived) are not made at all; while an initial copy runs, every entry is.
        // A batch with no create has none.
        const applying = this.applier.resyncing || !entries.some((e) => e.op === 'create') ? entries : await this.withoutShortLived(entries);
        const superseded = supersededStamps(applying);
        try {
          for (let i = 0; i < entries.length;) {
            if (entries[i]!.seq <= applied) { // resent after a reconnect: already applied
              i++;
              continue;
            }
            if (entries[i]!.seq !== applied + 1) throw new ProtocolError(`sequence gap: expected seq ${applied + 1}, got ${entries[i]!.seq}`, { seq: entries[i]!.seq, peer: conn.peer });
            // Appends to one file go as one write; each entry of the run is then recorded as applied on its own.
            const n = writeRun(applying, i);
            const run = n > 1 ? (applying.slice(i, i + n) as WriteEntry[]) : undefined;
            const written = run ? await this.applier.applyWrites(run) : undefined;
            const together = written !== undefined;
            if (run && together) this.opts.activity?.applied(run[n - 1]!.seq, 'write', run[0]!.path, written, Date.now(), n);
            for (const end = i + n; i < end; i++) {
              const entry = entries[i]!;
              if ('txn' in entry && entry.txn !== undefined) staged = true;
              const ok = together || (await this.applier.apply(applying[i]!, superseded[i]));
              applied = entry.seq;
              // Entries after the last mark are applied again after a kill: only those that are harmless so.
              if (!redoable(applying[i]!)) this.state.applied({ journalId, appliedSeq: applied, resyncing: this.applier.resyncing });
              if (logged && redoable(entry)) logged.push(raws[i]!);
              else logged = undefined;
              const p = 'path' in entry ? entry.path : undefined;
              if (!together) this.opts.activity?.applied(entry.seq, entry.op, p, entry.op === 'write' ? entry.data.length : 0);
              if (!ok && !this.applier.resyncing) this.opts.events?.emit('apply-error', `could not apply ${entry.op} (seq ${entry.seq}); the trees differ until repaired`, { seq: entry.seq, path: p }, 'error');
            }
          }
        } finally {
          // Within this batch's names: owed only where the batch stopped, or the entry that stamps again failed.
          await this.applier.settleStamps();
        }
        if (undecodable) throw new ProtocolError(`undecodable journal entry after seq ${applied}: ${undecodable.message}`, { seq: applied + 1 });
      }
      whole = true;
    } finally {
      // Whatever was applied is made durable and recorded, even when a batch stopped part way: plain writes in the
      // redo log (its flush deferred, see above), anything else by flushing the files. Every whole batch is answered,
      // also one that held only entries applied already: the primary waits for the answer.
      if (applied !== start) {
        const next = { journalId, appliedSeq: applied, resyncing: this.applier.resyncing };
        if (!whole || !logged || !this.state.logged(next, logged)) {
          await this.checkpoint(next);
        } else {
          this.replayed = next;
          if (!flushAsked) this.deferred ??= { session, timer: setTimeout(() => this.flushLater(), this.flushDelayMs) };
        }
      }
      if (flushAsked) this.flushLogged();
      if (applied !== start || whole) conn.send(FrameType.Ack, this.ack(session));
      this.applyingSince = 0;
    }
    // Applied, and logged as copies: nothing holds a view of these batches now, unless a transaction's writes wait.
    if (!staged) for (const f of frames) releaseFrame(f);
  }

  /** The batch without its short-lived files: those whose create would have opened a file there are not. */
  private async withoutShortLived(entries: JournalEntry[]): Promise<JournalEntry[]> {
    const first = withoutShortLived(entries, new Set());
    const existing = new Set<string>();
    const looked: Array<[rel: string, abs: string]> = [];
    for (const p of first.creates) {
      const abs = await this.applier.target.resolve(p).catch(() => undefined);
      if (abs === undefined) existing.add(p);
      else looked.push([p, abs]);
    }
    // Off this thread, as the creates' opens: a target whose disk hangs must not stop it (the watchdog).
    const found = await namesExist(looked.map(([, abs]) => abs));
    for (const [i, [p]] of looked.entries()) if (found[i]) existing.add(p);
    return existing.size ? withoutShortLived(entries, existing).entries : first.entries;
  }

  /**
   * Answers a query about the target as it stands after every batch received before it (batches and queries
   * share one queue). A path the target refuses (escape) or a failure is answered as an error, not fatal.
   */
  private async answer(frame: Frame, conn: PeerConnection): Promise<void> {
    const q = unpackBody<Query>(frame);
    if (typeof q?.id !== 'number') throw new ProtocolError('malformed query', { peer: conn.peer });
    try {
      const abs = await this.applier.target.resolve(q.path, { allowRoot: true });
      let result: unknown;
      if (q.kind === 'manifest') result = await describe(this.opts.target, q.path, { hashes: q.hashes === true, recursive: q.recursive === true });
      else if (q.kind === 'blocks') result = await blockSums(abs, Math.max(4096, Math.min(Number(q.blockSize) || 65536, 8 * 2 ** 20))) ?? null;
      else throw new ProtocolError(`unknown query kind ${String((q as { kind: unknown }).kind)}`);
      conn.send(FrameType.Answer, { id: q.id, result } satisfies Answer);
    } catch (err) {
      this.opts.log.warn({ err, path: q.path, peer: conn.peer }, 'query refused');
      conn.send(FrameType.Answer, { id: q.id, error: (err as Error).message } satisfies Answer);
    }
  }
}

function expect(frame: Frame | undefined, type: FrameType, conn: PeerConnection): Frame {
  if (!frame) throw new ProtocolError(`connection closed during handshake`, { peer: conn.peer });
  if (frame.type === FrameType.Refused) {
    throw new AuthError(`primary at ${conn.peer} refused this backup: ${unpackBody<Refusal>(frame).message}`, { peer: conn.peer });
  }
  if (frame.type !== type) throw new ProtocolError(`expected ${FrameType[type]}, got ${FrameType[frame.type]}`, { peer: conn.peer });
  return frame;
}

