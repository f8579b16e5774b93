// Confines every path from the wire to the backup's target directory.
// A path is accepted only if it is normalized, relative to the mirrored root, and no directory on the way is a symlink.
import fs from 'node:fs';
import path from 'node:path';
import { PathEscapeError } from '../errors.js';

const CHECKED_PATHS = 8192;

export class Target {
  /** Directories known to be real (not symlinks) inside the target; cleared when names change. */
  private readonly realDirs = new Set<string>(['/']);

  /** Paths whose shape was checked and whose parents are all in realDirs: a file written again costs no check. */
  private readonly checked = new Set<string>();

  constructor(readonly root: string) {}

  /** Checks a wire path ("/a/b") and returns the absolute path inside the target. */
  async resolve(rel: unknown, opts: { allowRoot?: boolean } = {}): Promise<string> {
    if (this.checked.has(rel as string)) return this.root + (rel as string);
    const p = checkShape(rel);
    if (p === '/') {
      if (!opts.allowRoot) throw new PathEscapeError('operation on the target root itself is not allowed', { path: p });
      return this.root + '/'; // the trailing slash follows a root that is itself a link (/proc/self/fd/N)
    }
    if (this.checkParents(p)) {
      if (this.checked.size >= CHECKED_PATHS) this.checked.clear();
      this.checked.add(p);
    }
    return this.root + p;
  }

  /**
   * Names changed that may have made a checked directory something else (rename, rmdir, symlink, link): forget
   * which were checked. An unlink cannot: it fails on a directory.
   */
  namesChanged(): void {
    this.realDirs.clear();
    this.realDirs.add('/');
    this.checked.clear();
  }

  /** False where a parent is missing or not a directory: the operation fails inside the target, but not for good. */
  private checkParents(p: string): boolean {
    const parts = p.split('/').slice(1, -1);
    let dir = '';
    for (const part of parts) {
      dir += '/' + part;
      if (this.realDirs.has(dir)) continue;
      let st: fs.Stats;
      try {
        // On this thread: a few microseconds, against two thread wake-ups through libuv's pool (no mount is served here).
        st = fs.lstatSync(this.root + dir);
      } catch {
        return false; // missing parent: the operation itself fails with ENOENT
      }
      if (st.isSymbolicLink()) throw new PathEscapeError(`path goes through a symlink at ${dir}`, { path: p });
      if (!st.isDirectory()) return false;
      this.realDirs.add(dir);
    }
    return true;
  }
}

/** A wire path must be a string like "/a/b": absolute from the mirrored root, no "." or ".." or empty parts, no NUL. */
function checkShape(rel: unknown): string {
  if (typeof rel !== 'string' || rel.length === 0) throw new PathEscapeError('path is missing or not a string', { path: String(rel) });
  if (rel.length > 4096) throw new PathEscapeError('path longer than 4096 bytes', { path: rel.slice(0, 100) });
  if (!rel.startsWith('/')) throw new PathEscapeError('path is not rooted at the mirrored directory', { path: rel });
  if (rel.includes('\0')) throw new PathEscapeError('path contains NUL', { path: rel });
  if (rel === '/') return rel;
  const parts = rel.slice(1).split('/');
  for (const part of parts) {
    if (part === '' || part === '.' || part === '..') throw new PathEscapeError(`path has a "${part}" component`, { path: rel });
  }
  if (path.posix.normalize(rel) !== rel) throw new PathEscapeError('path is not normalized', { path: rel });
  return rel;
}
