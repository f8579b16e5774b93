// Brings the backup to the primary's tree while the mount serves (the initial copy), and proves they match
// (verify, with repair). Runs on the primary: it reads the real directory, journals copies in order with live
// mutations, and asks the backup about its tree through questions placed in the batch stream.
import path from 'node:path';
import type { EventLog } from '../admin/events.js';
import { BLOCK_SIZE, PathCopier, type Locked } from '../fs/copy.js';
import type { Journal } from '../journal/journal.js';
import { stampsOf } from '../journal/stamps.js';
import type { Logger } from '../log.js';
import type { Shipper } from '../ship/shipper.js';
import type { Committed } from '../vos/committed.js';
import { compareEntries, describe, diffTrees, type BlockSums, type Difference, type TreeEntry } from './manifest.js';

export interface ResyncDeps {
  /** The real directory under the mount ('/' + path appended). */
  root: string;
  journal: Journal;
  shipper: Pick<Shipper, 'query' | 'connected'>;
  /** Runs a step with the mount's mutations held back. */
  locked: Locked;
  mirrored: (p: string, kind?: 'dir' | 'file') => boolean;
  /** Files in open transactions as the transactions found them: what the backup has of them. */
  committed: Committed;
  events: EventLog;
  log: Logger;
}

export interface Progress {
  phase: 'waiting for the backup' | 'scanning' | 'copying' | 'verifying' | 'done';
  startedAt: string;
  files: number;
  filesTotal: number;
  bytes: number;
  bytesTotal: number;
  /** Bytes journaled: only blocks that differed from the backup's. */
  bytesSent: number;
  etaSeconds?: number;
}

export interface VerifyReport {
  at: string;
  identical: boolean;
  /** Entries compared (primary side). */
  entries: number;
  bytes: number;
  differences: Difference[];
  repaired: number;
  durationMs: number;
}

const VERIFY_ROUNDS = 3;
const STAMP_BATCH = 500;

export class Resync {
  progress: Progress | undefined;
  lastVerify: VerifyReport | undefined;
  private running: Promise<unknown> = Promise.resolve();

  constructor(private readonly deps: ResyncDeps) {}

  /** Only the primary's mirrored paths are described. */
  private readonly keep = (rel: string, isDir: boolean) => this.deps.mirrored(rel, isDir ? 'dir' : 'file');

  private copier(): PathCopier {
    return new PathCopier(this.deps.root, this.deps.journal, (p, isDir) => this.deps.mirrored(p, isDir ? 'dir' : 'file'), this.deps.locked, true, this.deps.committed);
  }

  /** One baseline or verify at a time. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.running.then(fn, fn);
    this.running = run.catch(() => undefined);
    return run;
  }

  private query<T>(q: Parameters<Shipper['query']>[0]): Promise<T> {
    return this.deps.shipper.query<T>(q);
  }

  /**
   * The initial copy, made while the mount serves: every mirrored path the backup lacks or has otherwise is
   * copied (files by the blocks that differ), what it has beyond the primary is removed, then verify repairs
   * whatever live changes made differ during the copy, until a verify is clean.
   */
  baseline(fingerprint: string): Promise<Progress> {
    return this.exclusive(async () => {
      const { journal, locked, log } = this.deps;
      const p: Progress = { phase: 'waiting for the backup', startedAt: new Date().toISOString(), files: 0, filesTotal: 0, bytes: 0, bytesTotal: 0, bytesSent: 0 };
      this.progress = p;
      const t0 = Date.now();
      await locked(async () => void journal.append({ op: 'baseline-start' }));
      const backup = await this.query<TreeEntry[]>({ kind: 'manifest', path: '/', hashes: false, recursive: true });
      p.phase = 'scanning';
      const primary = await describe(this.deps.root, '/', { hashes: false, recursive: true, keep: this.keep, committed: this.deps.committed });
      for (const e of primary) {
        if (e.type === 'file') {
          p.filesTotal++;
          p.bytesTotal += e.size ?? 0;
        }
      }
      log.info({ files: p.filesTotal, bytes: p.bytesTotal, backupEntries: backup.length }, 'initial copy: comparing with the backup');
      p.phase = 'copying';
      const copier = this.copier();
      const onBackup = new Map(backup.map((e) => [e.path, e]));
      let lastLog = Date.now();
      for (const e of primary) {
        const b = onBackup.get(e.path);
        onBackup.delete(e.path);
        if (compareEntries(e, b).length) {
          const sums = e.type === 'file' && b?.type === 'file' ? await this.blocks(e.path) : undefined;
          await copier.copy(e.path, { backup: b, sums });
        }
        if (e.type === 'file') {
          p.files++;
          p.bytes += e.size ?? 0;
        }
        p.bytesSent = copier.stats.bytesSent;
        const elapsed = (Date.now() - t0) / 1000;
        p.etaSeconds = p.bytes > 0 ? Math.round((elapsed * (p.bytesTotal - p.bytes)) / p.bytes) : undefined;
        if (Date.now() - lastLog > 5000) {
          lastLog = Date.now();
          log.info({ ...p }, 'initial copy: progress');
        }
      }
      for (const b of [...onBackup.values()].sort((x, y) => (x.path < y.path ? -1 : 1))) await copier.copy(b.path, { backup: b });
      await this.stampDirectories(primary.filter((e) => e.type === 'dir').map((e) => e.path).reverse());
      p.phase = 'verifying';
      for (let round = 1; round <= VERIFY_ROUNDS; round++) {
        const report = await this.verifyNow(true, true);
        if (report.identical) break;
        if (round === VERIFY_ROUNDS) log.warn({ differences: report.differences.length }, 'initial copy: still differing after repairs; the scheduled verify continues');
      }
      await locked(async () => {
        journal.append({ op: 'baseline-end' });
        journal.markBaselineDone(fingerprint);
      });
      p.phase = 'done';
      p.etaSeconds = 0;
      this.deps.events.emit('baseline-done', 'initial copy done', { files: p.files, bytes: p.bytes, bytesSent: p.bytesSent, seconds: (Date.now() - t0) / 1000 });
      return p;
    });
  }

  /** Copying changes the backup's directories; their times are set to the primary's afterwards, deepest first. */
  private async stampDirectories(dirs: string[]): Promise<void> {
    for (let i = 0; i < dirs.length; i += STAMP_BATCH) {
      const batch = dirs.slice(i, i + STAMP_BATCH);
      await this.deps.locked(async () => {
        for (const d of batch) {
          const stamps = stampsOf(this.deps.root, [d]);
          if (stamps.length && this.deps.mirrored(d, 'dir')) this.deps.journal.append({ op: 'times', path: d }, stamps);
        }
      });
    }
  }

  private blocks(p: string): Promise<BlockSums | undefined> {
    return this.query<BlockSums | null>({ kind: 'blocks', path: p, blockSize: BLOCK_SIZE }).then((r) => r ?? undefined);
  }

  /** Compares both trees by content hash; with `repair`, copies every confirmed difference again. */
  verify(repair: boolean): Promise<VerifyReport> {
    return this.exclusive(() => this.verifyNow(repair));
  }

  /**
   * Both trees are hashed (the backup's as of the journal's end when asked); each path that differs is then
   * checked again exactly: the primary's entry is read and the question queued with mutations held back, so
   * both describe the same point of the journal. Only differences that survive that check are reported.
   * `inCopy`: the initial copy's own verify, whose differences are changes made while it copied (no drift).
   */
  private async verifyNow(repair: boolean, inCopy = false): Promise<VerifyReport> {
    const t0 = Date.now();
    const { root, locked } = this.deps;
    const [backup, primary] = await Promise.all([
      this.query<TreeEntry[]>({ kind: 'manifest', path: '/', hashes: true, recursive: true }),
      describe(root, '/', { hashes: true, recursive: true, keep: this.keep, committed: this.deps.committed }),
    ]);
    const differences: Difference[] = [];
    const copier = this.copier();
    const touchedDirs = new Set<string>();
    for (const candidate of diffTrees(primary, backup)) {
      const { mine, theirs } = await locked(async () => ({
        mine: (await describe(root, candidate.path, { hashes: true, recursive: false, keep: this.keep, committed: this.deps.committed }))[0],
        theirs: this.query<TreeEntry[]>({ kind: 'manifest', path: candidate.path, hashes: true, recursive: false }),
      }));
      const b = (await theirs)[0];
      const kinds = compareEntries(mine, b);
      if (!kinds.length) continue;
      differences.push({ path: candidate.path, kinds });
      if (!repair) continue;
      await copier.copy(candidate.path, { backup: b, sums: mine?.type === 'file' && b?.type === 'file' ? await this.blocks(candidate.path) : undefined });
      touchedDirs.add(path.posix.dirname(candidate.path));
    }
    // Repairs add and remove names: the directories get the primary's times back.
    await this.stampDirectories([...touchedDirs].sort().reverse());
    const report: VerifyReport = {
      at: new Date().toISOString(),
      identical: differences.length === 0,
      entries: primary.length,
      bytes: primary.reduce((n, e) => n + (e.size ?? 0), 0),
      differences,
      repaired: repair ? differences.length : 0,
      durationMs: Date.now() - t0,
    };
    this.lastVerify = report;
    const summary = { entries: report.entries, differences: differences.length, repaired: report.repaired, ms: report.durationMs };
    if (report.identical) this.deps.events.emit('verify', 'verify: primary and backup are identical', summary);
    else if (inCopy) this.deps.log.info({ ...summary, first: differences.slice(0, 10) }, 'initial copy: changes made during the copy copied again');
    else this.deps.events.emit('drift', `verify: ${differences.length} difference(s) found${repair ? ' and repaired' : ''}`, { ...summary, first: differences.slice(0, 10) }, 'warn');
    return report;
  }
}
