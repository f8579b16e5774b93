// Shared-secret challenge-response: each side proves it holds the secret; the secret never crosses the wire.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readPrivateFile } from './private-file.js';
import { ConfigError } from '../errors.js';
import { loadTls, type TlsFiles, type TlsMaterial } from './tls.js';

export type Side = 'primary' | 'backup';

export function newNonce(): Buffer {
  return randomBytes(32);
}

/** HMAC-SHA256 over the side's label and both nonces, own nonce last. */
export function proof(secret: Buffer, side: Side, theirNonce: Uint8Array, ourNonce: Uint8Array): Buffer {
  return createHmac('sha256', secret).update(`drms-v1-${side}`).update(theirNonce).update(ourNonce).digest();
}

export function proofMatches(expected: Buffer, got: unknown): boolean {
  return got instanceof Uint8Array && got.length === expected.length && timingSafeEqual(expected, got);
}

/** Reads a secret file; refuses one that group or others can read, or that is too short. */
export function readSecretFile(file: string): Buffer {
  const secret = Buffer.from(readPrivateFile(file, 'secret file').toString('utf8').trim(), 'utf8');
  if (secret.length < 16) throw new ConfigError(`secret in ${file} is shorter than 16 characters`, { path: file });
  return secret;
}

export interface Credentials {
  /** Empty when mutual TLS alone authenticates: both sides then prove an empty secret. */
  secret: Buffer;
  tls?: TlsMaterial;
}

/** The shared secret, TLS material, or both; at least one is required. */
export function loadCredentials(args: { secretFile?: string } & TlsFiles): Credentials {
  const tls = loadTls(args);
  if (!args.secretFile && !tls) throw new ConfigError('give --secret-file, or --tls-cert/--tls-key/--tls-ca, or both');
  return { secret: args.secretFile ? readSecretFile(args.secretFile) : Buffer.alloc(0), tls };
}
