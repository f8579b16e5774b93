// `drms sets`: the mirrored sets of config files, for the mount scripts; with --check, the checks made before
// mounting (FUSE, the directory, the state directory, credentials, policy, the backup's reachability).
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ConfigError } from '../errors.js';
import { Policy } from '../policy/policy.js';
import { parseRoutes } from '../ship/routes.js';
import { loadCredentials } from '../wire/auth.js';
import { loadSets, type MirroredSet } from './config.js';

export interface SetRef {
  file: string;
  set: MirroredSet;
}

/** Sets from a config file, or from every *.json in a directory; only `names` if given. */
export function findSets(where: string, names: string[]): SetRef[] {
  let files: string[];
  try {
    files = fs.statSync(where).isDirectory()
      ? fs.readdirSync(where).filter((f) => f.endsWith('.json')).sort().map((f) => path.join(where, f))
      : [where];
  } catch (err) {
    throw new ConfigError(`--config ${where}: ${(err as Error).message}`, { path: where });
  }
  if (files.length === 0) throw new ConfigError(`--config ${where}: no *.json config files there`, { path: where });
  const all = files.flatMap((file) => loadSets(file).map((set) => ({ file, set })));
  for (const n of names) if (!all.some((r) => r.set.name === n)) throw new ConfigError(`no set named "${n}" in ${where} (there are: ${all.map((r) => r.set.name).join(', ')})`);
  return names.length ? all.filter((r) => names.includes(r.set.name)) : all;
}

function mountedAt(dir: string): string | undefined {
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (f[4] === dir) return f[sep + 1];
  }
  return undefined;
}

/** Problems that stop a mount (fatal) and those only worth a warning. */
export async function checkSet({ set }: SetRef): Promise<{ fatal: string[]; warnings: string[] }> {
  const fatal: string[] = [];
  const warnings: string[] = [];
  const attempt = (what: () => unknown) => {
    try {
      what();
    } catch (err) {
      fatal.push((err as Error).message);
    }
  };
  if (!fs.existsSync('/dev/fuse')) fatal.push('/dev/fuse is missing: load the fuse module (modprobe fuse)');
  if (!['/bin/fusermount', '/usr/bin/fusermount'].some((f) => fs.existsSync(f))) fatal.push('fusermount is missing: apt-get install fuse');
  const mount = path.resolve(set.mount);
  if (!fs.statSync(mount, { throwIfNoEntry: false })?.isDirectory()) fatal.push(`${mount} is not a directory`);
  else if (mountedAt(mount)) fatal.push(`${mount} is already mounted (${mountedAt(mount)})`);
  const state = path.resolve(set.state);
  const stateParent = fs.existsSync(state) ? state : path.dirname(state);
  attempt(() => fs.accessSync(stateParent, fs.constants.W_OK));
  if (state === mount || state.startsWith(mount + path.sep)) fatal.push(`state ${state} is inside the mount ${mount}`);
  attempt(() => loadCredentials(set));
  if (set.policy) attempt(() => Policy.load(set.policy!));
  let routes: ReturnType<typeof parseRoutes> = [];
  attempt(() => (routes = parseRoutes(set.to)));
  const reachable = await Promise.all(routes.map((r) => new Promise<boolean>((resolve) => {
    const socket = net.connect({ host: r.host, port: r.port, timeout: 3000 }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false)).on('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  })));
  if (routes.length && !reachable.some(Boolean)) {
    warnings.push(`no route to the backup answers (${set.to}): the mount will serve and journal, and ship once it does`);
  }
  return { fatal, warnings };
}
