// Snapshots a directory tree in the terms the mirror must preserve, so two trees can be compared exactly.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { getAttribute, listAttributes } from 'fs-xattr';

export interface EntryFacts {
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: number;
  uid: number;
  gid: number;
  size?: number;
  sha256?: string;
  target?: string;
  xattrs: Record<string, string>;
  /** Whole seconds; mtimeUs is compared separately with a small tolerance. */
  mtimeSec: number;
}

export interface Snapshot {
  entries: Record<string, EntryFacts>;
  mtimeUs: Record<string, number>;
  /** Paths that share an inode, each group sorted, groups sorted. */
  linkGroups: string[][];
}

export async function snapshot(root: string): Promise<Snapshot> {
  const entries: Record<string, EntryFacts> = {};
  const mtimeUs: Record<string, number> = {};
  const byInode = new Map<string, string[]>();
  const visit = async (rel: string) => {
    const abs = path.join(root, rel);
    const st = await fs.promises.lstat(abs, { bigint: true });
    const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
    const facts: EntryFacts = { type, mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), xattrs: {}, mtimeSec: Number(st.mtimeNs / 1_000_000_000n) };
    if (type !== 'symlink') {
      for (const name of (await listAttributes(abs)).sort()) {
        if (name.startsWith('user.drms.')) continue; // drms's own bookkeeping on the backup, never mirrored
        facts.xattrs[name] = (await getAttribute(abs, name)).toString('base64');
      }
    }
    if (type === 'file') {
      facts.size = Number(st.size);
      facts.sha256 = createHash('sha256').update(await fs.promises.readFile(abs)).digest('hex');
      if (st.nlink > 1n) byInode.set(String(st.ino), [...(byInode.get(String(st.ino)) ?? []), rel]);
    }
    if (type === 'symlink') facts.target = await fs.promises.readlink(abs);
    entries[rel] = facts;
    mtimeUs[rel] = Number(st.mtimeNs / 1000n);
    if (type === 'dir') for (const name of (await fs.promises.readdir(abs)).sort()) await visit(rel === '/' ? `/${name}` : `${rel}/${name}`);
  };
  await visit('/');
  const linkGroups = [...byInode.values()].map((g) => g.sort()).sort((a, b) => a[0]!.localeCompare(b[0]!));
  return { entries, mtimeUs, linkGroups };
}

/** Paths whose mtimes differ by more than `toleranceUs` (Node sets times from float seconds: about 1 µs of rounding). */
export function mtimeDrift(a: Snapshot, b: Snapshot, toleranceUs = 2): string[] {
  return Object.keys(a.mtimeUs).filter((p) => b.mtimeUs[p] === undefined || Math.abs(a.mtimeUs[p]! - b.mtimeUs[p]!) > toleranceUs)
    .map((p) => `${p}: ${a.mtimeUs[p]} vs ${b.mtimeUs[p]}`);
}
