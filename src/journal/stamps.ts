// Times of paths as they are on disk, in the form journal entries carry them (Stamp).
import fs from 'node:fs';
import { nsToTimestamp, type Stamp } from './entry.js';

/**
 * Times of `paths` (mount paths) under `root` now; a path that vanished is left out (its operation succeeded).
 * Synchronous: `root` is the real directory, never a mount this process serves, and an lstat costs less than a trip
 * through libuv's pool.
 */
export function stampsOf(root: string, paths: Iterable<string>): Stamp[] {
  const out: Stamp[] = [];
  for (const p of new Set(paths)) {
    let st: fs.BigIntStats | undefined;
    try {
      st = fs.lstatSync(root + p, { bigint: true });
    } catch {
      continue;
    }
    out.push(stampOf(p, st));
  }
  return out;
}

/** The times of `p` from stats already taken. */
export function stampOf(p: string, st: fs.BigIntStats): Stamp {
  return [p, nsToTimestamp(st.atimeNs), nsToTimestamp(st.mtimeNs)];
}
