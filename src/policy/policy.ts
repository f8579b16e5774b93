// The critical-file policy: which paths under the mount are mirrored, and the class each belongs to.
// Classification is by path alone (cached), so an operation on a file outside the policy costs a map lookup.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import picomatch from 'picomatch';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import { ConfigError } from '../errors.js';
import { ORGANIZATIONS, type Organization } from '../vos/layout.js';

export type SyncMode = 'async' | 'sync';

export interface FileClass {
  name: string;
  patterns: string[];
  mirror: boolean;
  /** VOS organization given to new files of the class (and record size for fixed and relative). */
  organization?: Organization;
  recordSize?: number;
  /** Replication mode for the class's fsyncs, where it differs from the primary's --mode. */
  sync?: SyncMode;
}

/** Where a path stands: its class, and whether it is mirrored. */
export interface Placement {
  cls: FileClass;
  mirrored: boolean;
}

/** Built-in classes, in the order they are tried; a policy file may change any of them. `records` and `other`
 * match no pattern: record files are known by their user.vos.* attributes, `other` is everything else. */
const BUILT_IN: ReadonlyArray<Omit<FileClass, 'mirror'>> = [
  { name: 'macros', patterns: ['*.cm'] },
  { name: 'tables', patterns: ['*.table', '*.tab'] },
  {
    name: 'source',
    patterns: ['*.c', '*.h', '*.cc', '*.cpp', '*.pl1', '*.cobol', '*.cbl', '*.pas', '*.ftn', '*.f', '*.ts', '*.js', '*.sh', '*.py', '*.java', 'Makefile', '*.mk'],
  },
  { name: 'config', patterns: ['*.conf', '*.cfg', '*.ini', '*.json', '*.yaml', '*.yml', '*.xml', '*.properties'] },
  { name: 'records', patterns: [] },
  { name: 'other', patterns: [] },
];

const CLASS_KEYS = new Set(['patterns', 'mirror', 'organization', 'recordSize', 'sync']);
const TOP_KEYS = new Set(['include', 'exclude', 'classes']);
const CACHE_LIMIT = 100_000;

/**
 * Globs without a '/' match a name at any depth (as in .gitignore); with one, the path from the mount's root.
 * Each set is one regular expression (picomatch's, joined): a class of 17 globs costs one test, not 17.
 */
export function globMatcher(patterns: string[]): (rel: string) => boolean {
  const trimmed = patterns.map((p) => p.replace(/\/$/, ''));
  const byName = trimmed.filter((p) => !p.includes('/'));
  const byPath = trimmed.filter((p) => p.includes('/')).map((p) => p.replace(/^\//, ''));
  // picomatch's rule too: a path that is a glob's own text matches it (the whole path, even for a name glob).
  const literal = new Set([...byName, ...byPath]);
  const name = anyOf(byName);
  const full = anyOf(byPath);
  return (rel) => rel !== '' && (literal.has(rel) || name.test(baseName(rel)) || full.test(rel));
}

function anyOf(globs: string[]): RegExp {
  return globs.length ? new RegExp(globs.map((g) => `(?:${picomatch.makeRe(g, { dot: true }).source})`).join('|')) : /(?!)/;
}

/** The last segment, as picomatch's basename matching takes it (a trailing '/' is skipped). */
function baseName(rel: string): string {
  const end = rel.endsWith('/') ? rel.length - 1 : rel.length;
  return rel.slice(rel.lastIndexOf('/', end - 1) + 1, end);
}

export class Policy {
  /** The policy when none is given: everything is mirrored. */
  static everything(): Policy {
    return new Policy(['**'], [], BUILT_IN.map((c) => ({ ...c, mirror: true })), undefined);
  }

  readonly classes: readonly FileClass[];
  private readonly included: (rel: string) => boolean;
  private readonly excluded: (rel: string) => boolean;
  private readonly byPattern: Array<{ cls: FileClass; match: (rel: string) => boolean }>;
  private readonly cache = new Map<string, Placement>();
  readonly records: FileClass;
  readonly other: FileClass;
  /** True when every path is mirrored whatever its name (no policy, or one that excludes nothing). */
  readonly mirrorsAll: boolean;
  /** Some glob names a path: renaming a directory can change which files below it are mirrored. */
  readonly dependsOnDirectories: boolean;
  /** Changes when what is mirrored changes: a primary whose policy changed copies the difference again. */
  readonly fingerprint: string;

  private constructor(include: string[], exclude: string[], classes: FileClass[], readonly file: string | undefined) {
    this.classes = classes;
    this.included = globMatcher(include);
    this.excluded = globMatcher(exclude);
    this.byPattern = classes.filter((c) => c.patterns.length).map((cls) => ({ cls, match: globMatcher(cls.patterns) }));
    this.records = classes.find((c) => c.name === 'records')!;
    this.other = classes.find((c) => c.name === 'other')!;
    this.mirrorsAll = exclude.length === 0 && include.includes('**') && classes.every((c) => c.mirror);
    this.fingerprint = createHash('sha256').update(JSON.stringify({ include, exclude, classes: classes.map((c) => [c.name, c.patterns, c.mirror]) })).digest('hex').slice(0, 16);
    this.dependsOnDirectories = [...include, ...exclude, ...classes.flatMap((c) => c.patterns)].some((g) => g.replace(/\/$/, '').includes('/'));
  }

  /**
   * The class and mirroring of a path (relative to the mount, starting with '/'). A path is out if it or any
   * directory above it is excluded; directories are otherwise in (they hold the tree's shape); files must also be
   * included and belong to a mirrored class. Record files are placed by placeRecordFile.
   */
  place(p: string, isDir: boolean): Placement {
    const key = isDir ? p + '/' : p;
    let v = this.cache.get(key);
    if (!v) {
      v = this.placeUncached(p, isDir);
      if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
      this.cache.set(key, v);
    }
    return v;
  }

  /** A file that declares a VOS organization belongs to `records` unless excluded or given a class by name. */
  placeRecordFile(p: string): Placement {
    const v = this.place(p, false);
    if (v.cls !== this.other || this.isExcluded(p)) return v;
    return { cls: this.records, mirrored: this.records.mirror && this.included(p.slice(1)) };
  }

  private placeUncached(p: string, isDir: boolean): Placement {
    if (p === '/') return { cls: this.other, mirrored: true };
    if (this.isExcluded(p)) return { cls: this.other, mirrored: false };
    if (isDir) return { cls: this.other, mirrored: true };
    const rel = p.slice(1);
    const cls = this.byPattern.find((c) => c.match(rel))?.cls ?? this.other;
    return { cls, mirrored: cls.mirror && this.included(rel) };
  }

  private isExcluded(p: string): boolean {
    for (let rel = p.slice(1); rel && rel !== '.'; rel = path.posix.dirname(rel)) {
      if (this.excluded(rel)) return true;
    }
    return false;
  }

  /** Reads and checks a policy file (YAML or JSON). Every mistake is a ConfigError naming the key and line. */
  static load(file: string): Policy {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`--policy ${file}: cannot read it: ${(err as Error).message}`, { path: file });
    }
    return Policy.parse(text, file);
  }

  static parse(text: string, file: string): Policy {
    const lines = new LineCounter();
    const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
    const where = (node: YamlNode | null | undefined) => (node?.range ? `line ${lines.linePos(node.range[0]).line}` : 'top');
    const bad = (node: YamlNode | null | undefined, msg: string) => new ConfigError(`policy ${file} (${where(node)}): ${msg}`, { path: file });
    if (doc.errors.length) {
      const e = doc.errors[0]!;
      throw new ConfigError(`policy ${file} (line ${lines.linePos(e.pos[0]).line}): not valid YAML or JSON: ${e.message.split('\n')[0]}`, { path: file });
    }
    const root = doc.contents;
    if (!isMap(root)) throw bad(root, 'expected a mapping with include, exclude and classes');
    const globs = (node: unknown, key: string): string[] => {
      if (!isSeq(node) || !node.items.every((i) => isScalar(i) && typeof i.value === 'string' && i.value.length > 0)) {
        throw bad(node as YamlNode, `${key} must be a list of glob strings`);
      }
      return node.items.map((i) => (i as { value: string }).value.trim());
    };
    let include = ['**'];
    let exclude: string[] = [];
    const classes = BUILT_IN.map((c) => ({ ...c, mirror: true }) as FileClass);
    for (const pair of root.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : '';
      if (!TOP_KEYS.has(key)) throw bad(pair.key as YamlNode, `unknown key "${key}" (expected ${[...TOP_KEYS].join(', ')})`);
      if (key === 'include') include = globs(pair.value, 'include');
      else if (key === 'exclude') exclude = globs(pair.value, 'exclude');
      else {
        if (!isMap(pair.value)) throw bad(pair.value as YamlNode, 'classes must be a mapping of class name to settings');
        const custom: FileClass[] = [];
        for (const c of pair.value.items) {
          const name = isScalar(c.key) ? String(c.key.value) : '';
          if (!/^[a-z][a-z0-9_-]*$/.test(name)) throw bad(c.key as YamlNode, `class name "${name}" must be lower-case letters, digits, - or _`);
          const settings = c.value;
          if (settings !== null && !isMap(settings)) throw bad(settings as YamlNode, `class ${name}: expected a mapping of settings`);
          let cls = classes.find((x) => x.name === name);
          if (!cls) {
            cls = { name, patterns: [], mirror: true };
            custom.push(cls);
          }
          for (const s of isMap(settings) ? settings.items : []) {
            const k = isScalar(s.key) ? String(s.key.value) : '';
            const v = isScalar(s.value) ? s.value.value : undefined;
            const at = s.value as YamlNode;
            if (!CLASS_KEYS.has(k)) throw bad(s.key as YamlNode, `class ${name}: unknown key "${k}" (expected ${[...CLASS_KEYS].join(', ')})`);
            if (k === 'patterns') {
              if (name === 'records' || name === 'other') throw bad(at, `class ${name} takes no patterns (it is ${name === 'records' ? 'known by user.vos.* attributes' : 'everything else'})`);
              cls.patterns = globs(s.value, `class ${name}: patterns`);
            } else if (k === 'mirror') {
              if (typeof v !== 'boolean') throw bad(at, `class ${name}: mirror must be true or false`);
              cls.mirror = v;
            } else if (k === 'organization') {
              if (!ORGANIZATIONS.includes(v as Organization)) throw bad(at, `class ${name}: organization must be one of ${ORGANIZATIONS.join(', ')}`);
              cls.organization = v as Organization;
            } else if (k === 'recordSize') {
              if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > 32767) throw bad(at, `class ${name}: recordSize must be an integer from 1 to 32767`);
              cls.recordSize = v as number;
            } else {
              if (v !== 'async' && v !== 'sync') throw bad(at, `class ${name}: sync must be async or sync`);
              cls.sync = v;
            }
          }
          if ((cls.organization === 'fixed' || cls.organization === 'relative') && !cls.recordSize) {
            throw bad(c.key as YamlNode, `class ${name}: organization ${cls.organization} needs a recordSize`);
          }
          if (cls.patterns.length === 0 && name !== 'records' && name !== 'other') throw bad(c.key as YamlNode, `class ${name}: patterns are missing`);
        }
        // Classes named in the file are tried first, in the file's order.
        classes.unshift(...custom);
      }
    }
    return new Policy(include, exclude, classes, file);
  }

  /** What the policy says, for status and the log. */
  describe(): { file?: string; classes: Array<{ name: string; mirror: boolean; sync?: SyncMode; organization?: Organization }> } {
    return { file: this.file, classes: this.classes.map(({ name, mirror, sync, organization }) => ({ name, mirror, sync, organization })) };
  }
}
