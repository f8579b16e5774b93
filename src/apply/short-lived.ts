// Files a batch creates and removes again (temporary files: create, write, rename, unlink): the backup applies what
// is left of them, the names their renames replaced and the other paths' times, not an inode made and freed.
import type { JournalEntry, Stamp } from '../journal/entry.js';

/** Entries on a file's contents or attributes, which leave nothing once the file is gone. */
const ON_THE_FILE = new Set<JournalEntry['op']>(['write', 'truncate', 'times', 'chmod', 'chown', 'setxattr', 'removexattr', 'fsync', 'none']);

/** Entries whose effect on names their paths do not tell: nothing after them is taken out. */
const OPAQUE = new Set<JournalEntry['op']>(['txn-commit', 'txn-abort', 'baseline-start', 'baseline-end', 'remove']);

/** The names an entry acts on (a rename's and a link's second one too); undefined if one is not a string. */
function namesOf(e: JournalEntry): string[] | undefined {
  const out: unknown[] = 'path' in e ? [e.path] : [];
  if ('to' in e) out.push(e.to);
  // From the wire: what the target refuses is left as it came, for it to say why.
  return out.every((p) => typeof p === 'string') ? (out as string[]) : undefined;
}

/** "/a/b/c" → "/a/b", "/a" (not "/"). */
function* ancestors(p: string): Generator<string> {
  for (let at = p.lastIndexOf('/'); at > 0; at = p.lastIndexOf('/', at - 1)) yield p.slice(0, at);
}

interface Chain {
  /** Its name now. */
  name: string;
  /** Every name it had. */
  names: Set<string>;
  /** Indexes of its entries, its create first. */
  members: number[];
}

export interface Rewritten {
  entries: JournalEntry[];
  /** The paths of the creates taken out. */
  creates: string[];
}

/**
 * The batch with each short-lived file's entries replaced. A file is short-lived when the batch creates it at a
 * name that no earlier entry of the batch touched and that did not exist on the target (`existing` holds those that
 * did: such a create opens a file that may have other links), then unlinks it, with nothing between but entries
 * on its contents or attributes and renames of it: no link to it, nothing renamed over it or its directories, no
 * transaction. Its create and the entries on it become markers, each rename of it an unlink of the name it
 * replaced; every replacement keeps the stamps of the other paths (its directories' times). Nothing is reordered.
 */
export function withoutShortLived(entries: readonly JournalEntry[], existing: ReadonlySet<string>): Rewritten {
  const out = entries.slice();
  const creates: string[] = [];
  const live = new Map<string, Chain>();
  /** Directories above live files: how many each holds. */
  const above = new Map<string, number>();
  const seen = new Set<string>();
  const seenAbove = new Set<string>();

  const hold = (chain: Chain, add: 1 | -1) => {
    if (add === 1) live.set(chain.name, chain);
    else live.delete(chain.name);
    for (const dir of ancestors(chain.name)) {
      const n = (above.get(dir) ?? 0) + add;
      if (n === 0) above.delete(dir);
      else above.set(dir, n);
    }
  };
  // Something else acts on the name or on a directory above live files: they are applied as they came.
  const dropAt = (p: string) => {
    const own = live.get(p);
    if (own) hold(own, -1);
    if (above.has(p)) for (const chain of [...live.values()]) if (chain.name.startsWith(p + '/')) hold(chain, -1);
  };
  const touched = (p: string) => seen.has(p) || seenAbove.has(p) || [...ancestors(p)].some((dir) => seen.has(dir));

  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    const names = namesOf(e);
    if (OPAQUE.has(e.op) || !names) break;
    const own = 'path' in e ? live.get(e.path) : undefined;
    if (own && e.op === 'unlink') {
      hold(own, -1);
      own.members.push(i);
      replace(out, entries, own);
      creates.push(own.names.values().next().value!); // its first name
    } else if (own && e.op === 'rename' && !e.to.startsWith(e.path + '/')) {
      dropAt(e.to); // a file it replaces is applied as it came, then removed by the unlink that stands for this
      hold(own, -1);
      own.members.push(i);
      own.name = e.to;
      own.names.add(e.to);
      hold(own, 1);
    } else if (own && ON_THE_FILE.has(e.op) && !('txn' in e && e.txn !== undefined)) {
      own.members.push(i);
    } else {
      for (const p of names) dropAt(p);
    }
    if (e.op === 'create' && !existing.has(e.path) && !touched(e.path)) hold({ name: e.path, names: new Set([e.path]), members: [i] }, 1);
    for (const p of names) {
      seen.add(p);
      for (const dir of ancestors(p)) seenAbove.add(dir);
    }
  }
  return { entries: out, creates };
}

function replace(out: JournalEntry[], entries: readonly JournalEntry[], chain: Chain): void {
  const others = (stamps: Stamp[] | undefined) => stamps?.filter(([p]) => !chain.names.has(p));
  for (const j of chain.members) {
    const e = entries[j]!;
    const { seq, ts } = e;
    const stamps = others(e.stamps);
    out[j] = e.op === 'rename' ? { op: 'unlink', path: e.to, seq, ts, stamps } : { op: 'none', seq, ts, stamps };
  }
}
