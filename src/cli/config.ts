// Config files for mirrored sets (/etc/drms/*.json): each set holds the primary's flags by name (camelCase), so
// `drms primary --config FILE --set NAME`, the mount scripts and the systemd units share one description.
import fs from 'node:fs';
import { ConfigError } from '../errors.js';
import { PRIMARY_DEFAULTS } from './flags.js';
import type { PrimaryArgs } from './primary.js';

/** Keys a set may hold; `to` may also be a list of HOST:PORT. */
const KEYS = new Set([
  'name', 'mount', 'state', 'to', 'secretFile', 'tlsCert', 'tlsKey', 'tlsCa', 'mode', 'syncTimeout', 'onSyncTimeout', 'drainTimeout',
  'maxBacklog', 'policy', 'verifyEvery', 'listen', 'binding', 'writebackCache', 'ioUring', 'admin', 'adminTokenFile', 'alertCommand', 'alertWebhook', 'alertLag', 'alertBacklog', 'alertDisconnected', 'alertStuck', 'nice',
]);

export interface MirroredSet extends PrimaryArgs {
  name: string;
}

/** All sets of a config file: `{"sets": [{name, mount, state, to, ...}]}`. Every mistake names the file and key. */
export function loadSets(file: string): MirroredSet[] {
  let doc: unknown;
  try {
    doc = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ConfigError(`config ${file}: ${(err as Error).message}`, { path: file });
  }
  const sets = (doc as { sets?: unknown })?.sets;
  if (!Array.isArray(sets) || sets.length === 0) throw new ConfigError(`config ${file}: expected {"sets": [ ... ]} with at least one set`, { path: file });
  const names = new Set<string>();
  return sets.map((raw, i) => {
    const where = `config ${file}, sets[${i}]`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`${where}: expected an object`, { path: file });
    const set: Record<string, string> = {};
    for (const [k, v] of Object.entries(raw)) {
      if (!KEYS.has(k)) throw new ConfigError(`${where}: unknown key "${k}"`, { path: file });
      if (k === 'to' && Array.isArray(v) && v.every((x) => typeof x === 'string')) set.to = v.join(',');
      else if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') set[k] = String(v);
      else throw new ConfigError(`${where}: "${k}" must be a string${k === 'to' ? ' or a list of HOST:PORT' : ' a number or true/false'}`, { path: file });
    }
    for (const k of ['name', 'mount', 'state', 'to']) if (!set[k]) throw new ConfigError(`${where}: "${k}" is missing`, { path: file });
    if (!/^[A-Za-z0-9_.-]+$/.test(set.name!)) throw new ConfigError(`${where}: name "${set.name}" may hold only letters, digits, _ . -`, { path: file });
    if (names.has(set.name!)) throw new ConfigError(`${where}: a second set named "${set.name}"`, { path: file });
    names.add(set.name!);
    return { ...PRIMARY_DEFAULTS, ...set } as unknown as MirroredSet;
  });
}

/** The set named `name`, or the only one when the file holds one. */
export function loadSet(file: string, name?: string): MirroredSet {
  const sets = loadSets(file);
  if (name === undefined) {
    if (sets.length === 1) return sets[0]!;
    throw new ConfigError(`config ${file} holds ${sets.length} sets (${sets.map((s) => s.name).join(', ')}): give --set NAME`, { path: file });
  }
  const set = sets.find((s) => s.name === name);
  if (!set) throw new ConfigError(`config ${file} has no set named "${name}" (it has ${sets.map((s) => s.name).join(', ')})`, { path: file });
  return set;
}
