// Typed errors with the context an operator needs (path, seq, peer).
import { constants as osConstants } from 'node:os';

export type ErrorContext = Record<string, string | number | undefined>;

export class DrmsError extends Error {
  readonly context: ErrorContext;
  constructor(message: string, context: ErrorContext = {}) {
    super(message);
    this.name = new.target.name;
    this.context = context;
  }
}

/** A bad flag, config value or file permission: nothing was started. */
export class ConfigError extends DrmsError {}

/** The peer failed the challenge-response or spoke another protocol. */
export class AuthError extends DrmsError {}

/** A site with a newer epoch refused this one: it was superseded by a promotion and must not act as primary. */
export class FencedError extends DrmsError {
  constructor(message: string, readonly epoch: number, context: ErrorContext = {}) {
    super(message, context);
  }
}

/** A frame that is corrupt, too large, unexpected or out of sequence. */
export class ProtocolError extends DrmsError {}

/** A path from the wire that would leave the target directory. */
export class PathEscapeError extends DrmsError {}

/** An operation the backup could not apply to its target. */
export class ApplyError extends DrmsError {}

/** Negative errno for a Node system error (by errno, else by code), EIO when it carries neither. */
export function errnoOf(err: unknown): number {
  const e = err as NodeJS.ErrnoException | undefined;
  if (typeof e?.errno === 'number' && e.errno < 0) return e.errno;
  const byCode = e?.code ? (osConstants.errno as Record<string, number>)[e.code] : undefined;
  return byCode ? -byCode : -5;
}

export function codeOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}
