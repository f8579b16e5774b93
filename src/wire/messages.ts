// Bodies of the control frames (msgpack). Batch bodies are binary: see frame.ts.
import type { EpochRecord } from '../failover/generation.js';

/** Primary → backup, first frame: its journal, and its epoch with the line of journals that led to it. */
export interface Hello {
  version: number;
  nonce: Uint8Array;
  journalId: string;
  epoch: number;
  lineage: EpochRecord[];
  /** The primary reads Ack.replayedSeq and sends Flush when it waits for durability: the backup may defer its flushes. */
  flushes?: boolean;
}

/** Backup → primary: its nonce and its proof that it holds the secret. */
export interface Challenge {
  version: number;
  nonce: Uint8Array;
  proof: Uint8Array;
}

/** Primary → backup: the primary's proof. */
export interface Auth {
  proof: Uint8Array;
}

/** Backup → primary: where to resume. appliedSeq is 0 for a journal the backup has not seen. */
export interface Welcome {
  journalId: string;
  appliedSeq: number;
  /** The backup's epoch (the primary's, once adopted). */
  epoch: number;
  /** Its flushes are deferred (see Ack.replayedSeq): the primary sends Flush when it waits for durability. */
  deferredFlush?: boolean;
}

/** Backup → primary instead of Welcome: the primary's epoch is older than one this site knows. */
export interface Fenced {
  epoch: number;
  message: string;
}

/** Primary → backup: take over as primary at `epoch` once everything before this frame is applied. */
export interface Promote {
  id: number;
  epoch: number;
}

/** Backup → primary: the answer to Promote. */
export interface Promoted {
  id: number;
  epoch: number;
  journalId?: string;
  error?: string;
}

/**
 * Backup → primary: everything up to appliedSeq is applied and durable. replayedSeq (a backup that defers its
 * flushes): applied to its files, durable within its flush delay or at the next Flush.
 */
export interface Ack {
  appliedSeq: number;
  replayedSeq?: number;
}

/** Either way, before closing: why. */
export interface Refusal {
  message: string;
}

/**
 * Primary → backup, between batches: answered once every entry sent before it is applied, so the answer
 * describes the backup as of that point of the journal. `path` is a mirrored path ('/' for the whole tree).
 */
export type QueryBody =
  | { kind: 'manifest'; path: string; hashes: boolean; recursive: boolean }
  | { kind: 'blocks'; path: string; blockSize: number };

export type Query = QueryBody & { id: number };

/** Backup → primary. */
export interface Answer {
  id: number;
  result?: unknown;
  error?: string;
}
