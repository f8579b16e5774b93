// Mutual TLS material: each side presents a certificate and accepts only peers signed by the given CA.
import { readFileSync, statSync } from 'node:fs';
import { ConfigError } from '../errors.js';

export interface TlsFiles {
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
}

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

/** All three flags or none; a private key readable by group or others is refused. */
export function loadTls(files: TlsFiles): TlsMaterial | undefined {
  const given = [files.tlsCert, files.tlsKey, files.tlsCa].filter((f) => f !== undefined).length;
  if (given === 0) return undefined;
  if (given !== 3) throw new ConfigError('--tls-cert, --tls-key and --tls-ca go together');
  const read = (file: string, flag: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new ConfigError(`${flag} ${file}: ${(err as Error).message}`, { path: file });
    }
  };
  const mode = statSync(files.tlsKey!, { throwIfNoEntry: false })?.mode ?? 0;
  if (mode & 0o077) throw new ConfigError(`--tls-key ${files.tlsKey} is accessible by group or others (mode ${(mode & 0o777).toString(8)}); run: chmod 600 ${files.tlsKey}`);
  return { cert: read(files.tlsCert!, '--tls-cert'), key: read(files.tlsKey!, '--tls-key'), ca: read(files.tlsCa!, '--tls-ca') };
}
