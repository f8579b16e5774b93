// Mutual TLS material: each side presents a certificate and accepts only peers signed by the given CA.
import { readFileSync } from 'node:fs';
import { readPrivateFile } from './private-file.js';
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
  return { cert: read(files.tlsCert!, '--tls-cert'), key: readPrivateFile(files.tlsKey!, '--tls-key'), ca: read(files.tlsCa!, '--tls-ca') };
}
