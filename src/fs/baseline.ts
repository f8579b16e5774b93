// The initial copy: journals the existing tree as ordinary operations so the backup starts identical.
import fs from 'node:fs';
import path from 'node:path';
import { getAttribute, listAttributes } from 'fs-xattr';
import type { Logger } from '../log.js';
import { nsToTimestamp, type Op, type Stamp } from '../journal/entry.js';
import type { Journal } from '../journal/journal.js';

const CHUNK = 1024 * 1024;
/** Yield to the event loop every so many bytes, so reads through the mount are still served. */
const YIELD_EVERY = 16 * 1024 * 1024;

export interface BaselineStats {
  files: number;
  dirs: number;
  bytes: number;
}

/** Journals every entry under `root` (the real directory), then a baseline-end with the full list of paths. */
export async function journalBaseline(root: string, journal: Journal, log: Logger): Promise<BaselineStats> {
  const stats: BaselineStats = { files: 0, dirs: 0, bytes: 0 };
  const paths: string[] = [];
  const firstPathOfInode = new Map<string, string>();
  let sinceYield = 0;
  const append = async (op: Op, stamps?: Stamp[]) => {
    journal.append(op, stamps);
    if (sinceYield > YIELD_EVERY) {
      sinceYield = 0;
      await new Promise((r) => setImmediate(r));
    }
  };
  const abs = (rel: string) => root + rel; // root is a magic link: '/' must follow it
  const stampOf = (rel: string, st: fs.BigIntStats): Stamp => [rel, nsToTimestamp(st.atimeNs), nsToTimestamp(st.mtimeNs)];
  const owner = (st: fs.BigIntStats) => ({ uid: Number(st.uid), gid: Number(st.gid) });

  const copyXattrs = async (rel: string) => {
    for (const name of await listAttributes(abs(rel))) {
      await append({ op: 'setxattr', path: rel, name, value: await getAttribute(abs(rel), name) });
    }
  };

  const visit = async (rel: string): Promise<void> => {
    const st = await fs.promises.lstat(abs(rel), { bigint: true });
    const mode = Number(st.mode) & 0o7777;
    if (st.isDirectory()) {
      stats.dirs++;
      if (rel !== '/') await append({ op: 'mkdir', path: rel, mode, ...owner(st) });
      await append({ op: 'chmod', path: rel, mode });
      await append({ op: 'chown', path: rel, ...owner(st) });
      await copyXattrs(rel);
      const names = (await fs.promises.readdir(abs(rel))).sort();
      for (const name of names) await visit(path.posix.join(rel, name));
      // Children change a directory's mtime, so its times go last.
      await append({ op: 'times', path: rel }, [stampOf(rel, st)]);
    } else if (st.isSymbolicLink()) {
      await append({ op: 'symlink', path: rel, target: await fs.promises.readlink(abs(rel)), ...owner(st) }, [stampOf(rel, st)]);
    } else if (st.isFile()) {
      const inode = `${st.dev}:${st.ino}`;
      const first = st.nlink > 1n ? firstPathOfInode.get(inode) : undefined;
      if (first) {
        await append({ op: 'link', path: first, to: rel });
      } else {
        if (st.nlink > 1n) firstPathOfInode.set(inode, rel);
        stats.files++;
        await copyFile(rel, mode, st);
      }
    } else {
      log.warn({ path: rel }, 'baseline: skipping a special file (device, FIFO or socket): not mirrored');
      return;
    }
    if (rel !== '/') paths.push(rel);
  };

  const copyFile = async (rel: string, mode: number, st: fs.BigIntStats) => {
    await append({ op: 'create', path: rel, mode, ...owner(st) });
    const fh = await fs.promises.open(abs(rel), 'r');
    try {
      for (let offset = 0; ; ) {
        const buf = Buffer.allocUnsafe(CHUNK);
        const { bytesRead } = await fh.read(buf, 0, CHUNK, offset);
        if (bytesRead === 0) break;
        await append({ op: 'write', path: rel, offset, data: buf.subarray(0, bytesRead) });
        offset += bytesRead;
        stats.bytes += bytesRead;
        sinceYield += bytesRead;
      }
    } finally {
      await fh.close();
    }
    await append({ op: 'truncate', path: rel, size: Number(st.size) });
    await copyXattrs(rel);
    await append({ op: 'times', path: rel }, [stampOf(rel, st)]);
  };

  await visit('/');
  await append({ op: 'baseline-end', paths });
  journal.markBaselineDone();
  await journal.flushed();
  return stats;
}
