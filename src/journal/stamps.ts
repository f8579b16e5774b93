// Times of paths as they are on disk, in the form journal entries carry them (Stamp).
import fs from 'node:fs';
import { nsToTimestamp, type Stamp } from './entry.js';

/** Times of `paths` (mount paths) under `root` now; a path that vanished is left out (its operation succeeded). */
export async function stampsOf(root: string, paths: Iterable<string>): Promise<Stamp[]> {
  const out: Stamp[] = [];
  for (const p of new Set(paths)) {
    const st = await fs.promises.lstat(root + p, { bigint: true }).catch(() => undefined);
    if (st) out.push([p, nsToTimestamp(st.atimeNs), nsToTimestamp(st.mtimeNs)]);
  }
  return out;
}
