// Reads a file that holds a secret (shared secret, TLS private key): refused if group or others can reach it.
import { readFileSync, statSync } from 'node:fs';
import { ConfigError } from '../errors.js';

/** `what` names the file in messages, e.g. "secret file" or "--tls-key". */
export function readPrivateFile(file: string, what: string): Buffer {
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch (err) {
    throw new ConfigError(`cannot read ${what} ${file}: ${(err as Error).message}`, { path: file });
  }
  if (mode & 0o077) {
    throw new ConfigError(`${what} ${file} is accessible by group or others (mode ${(mode & 0o777).toString(8)}); run: chmod 600 ${file}`, { path: file });
  }
  return readFileSync(file);
}
