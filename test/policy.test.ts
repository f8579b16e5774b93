// The critical-file policy: classes and excludes decide what is mirrored, new files are detected wherever they
// appear, renames across the policy's edge copy or remove, and a bad policy file stops the primary with a reason.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { getAttribute } from 'fs-xattr';
import picomatch from 'picomatch';
import { globMatcher } from '../src/policy/policy.js';
import { drms, isMounted, layout, sh, startBackup, startPrimary } from './helpers/cluster.js';
import { snapshot } from './helpers/tree.js';

const POLICY = `# critical files of the ATM switch
exclude:
  - "*.tmp"
  - "*.lock"
  - "scratch/"
classes:
  logs:
    patterns: ["*.atmlog"]
    organization: sequential
  other:
    mirror: false
`;

/** The paths (below the mount) a tree holds. */
function pathsOf(entries: Record<string, unknown>): string[] {
  return Object.keys(entries).sort();
}

t.test('a set of globs decides as picomatch does, glob by glob', async (t) => {
  // The reference: each glob on its own, as picomatch's own matcher takes it (name globs by basename).
  const reference = (globs: string[], rel: string) =>
    globs.some((g) => {
      const bare = g.replace(/\/$/, '');
      return bare.includes('/') ? picomatch(bare.replace(/^\//, ''), { dot: true })(rel) : picomatch(bare, { basename: true, dot: true })(rel);
    });
  const sets = [
    ['*.cm'],
    ['*.c', '*.h', 'Makefile', '*.mk'],
    ['*.tmp', '*.lock', 'scratch/'],
    ['**'],
    ['!*.tmp'],
    ['{a,b}*.x', '[ab].z', 'x?y', '.hidden*', '*.(c|h)', 'foo[bar'],
    ['src/**/*.c', '/data/*', 'logs/'],
    ['*.cm', 'src/**/*.c'],
  ];
  const paths = ['a.cm', 'dir/a.cm', 'dir/a.cmx', 'Makefile', 'sub/Makefile', 'x.c', 'deep/er/x.h', 'q.tmp', 'scratch', 'scratch/f',
    'a1.x', 'c1.x', 'a.z', '[ab].z', 'xzy', 'x/y', '.hidden', 'd/.hiddenfile', 'u.c', 'foo[bar', 'k/foo[bar', 'src/a/b/c.c',
    'src/c.c', 'other/src/c.c', 'data/f', 'data/f/g', 'logs', 'logs/x', '.', '.dot', 'dir/.dot.cm', 'dir/', '*.(c|h)', 'k/*.(c|h)'];
  let disagreements = 0;
  for (const globs of sets) {
    const match = globMatcher(globs);
    for (const rel of paths) {
      if (match(rel) !== reference(globs, rel)) {
        disagreements++;
        t.fail(`${JSON.stringify(globs)} on ${rel}: ${match(rel)}, picomatch says ${reference(globs, rel)}`);
      }
    }
  }
  t.equal(disagreements, 0, `${sets.length} glob sets on ${paths.length} paths`);
  // Both sides do decide: the matrix holds matches and misses.
  t.ok(globMatcher(['*.cm'])('dir/a.cm') && !globMatcher(['*.cm'])('dir/a.cmx'), 'a name glob matches at depth, and only its own suffix');
});

t.test('a policy with excludes and classes: new critical files anywhere are mirrored, the rest are not', async (t) => {
  const { dir, prod, dr, pstate, bstate, secret } = layout(t);
  fs.mkdirSync(path.join(prod, 'scratch'));
  fs.writeFileSync(path.join(prod, 'old.cm'), '&echo old\n');
  fs.writeFileSync(path.join(prod, 'notes.txt'), 'not critical\n');
  fs.writeFileSync(path.join(prod, 'scratch/x.cm'), 'excluded by directory\n');
  const policyFile = path.join(dir, 'policy.yaml');
  fs.writeFileSync(policyFile, POLICY);
  const backup = await startBackup(t, { target: dr, state: bstate, secret });
  await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret, extra: ['--policy', policyFile] });
  const sync = async () => {
    const r = await drms(['sync', '--state', pstate, '--timeout', '60']);
    t.equal(r.code, 0, `drms sync: ${r.stdout}${r.stderr}`);
  };
  await sync();
  t.same(pathsOf((await snapshot(dr)).entries), ['/', '/old.cm'], 'initial copy: only the macro (not the excluded directory or the unclassified file)');

  await sh(`
    mkdir -p new/deeper new/src scratch/sub
    printf '&echo run\\n' > new/deeper/run.cm
    printf 'k=v\\n' > new/rates.table
    printf 'int main(){}\\n' > new/src/main.c
    printf 'proc p;\\n' > new/deeper/more.pl1
    printf 'temp\\n' > new/x.tmp
    printf 'readme\\n' > new/readme.txt
    printf 'scratch macro\\n' > scratch/y.cm
    : > app.lock
    printf '\\0\\4ATM1\\0\\4' > new/today.atmlog
  `, prod);
  await sync();
  let b = await snapshot(dr);
  t.same(pathsOf(b.entries), [
    '/', '/new', '/new/deeper', '/new/deeper/more.pl1', '/new/deeper/run.cm', '/new/rates.table', '/new/src', '/new/src/main.c',
    '/new/today.atmlog', '/old.cm',
  ], 'macros, tables, source and logs created in new directories are on the backup; excluded and unclassified files are not');
  t.equal((await getAttribute(path.join(dr, 'new/today.atmlog'), 'user.vos.organization')).toString(), 'sequential', 'the class gave the new log its VOS organization');
  t.equal(fs.readFileSync(path.join(dr, 'new/deeper/run.cm'), 'utf8'), '&echo run\n');

  // Files outside the policy cost no journal entries.
  const seqOf = async () => JSON.parse((await drms(['status', '--state', pstate, '--json'])).stdout).lastSeq as number;
  const before = await seqOf();
  await sh('for i in $(seq 1 100); do echo "line $i" >> notes.txt; echo tmp >> new/x.tmp; done; sync notes.txt', prod);
  t.equal(await seqOf(), before, '200 writes to files outside the policy journaled nothing');

  await sh(`
    mv new/x.tmp new/x.cm
    mv new/rates.table new/rates.tmp
    mv new/readme.txt new/readme.cm
    mv scratch/y.cm new/y.cm
    mv new/deeper scratch/deeper
    mv new/src new/src2
    ln notes.txt notes.cm
  `, prod);
  await sync();
  b = await snapshot(dr);
  t.same(pathsOf(b.entries), [
    '/', '/new', '/new/readme.cm', '/new/src2', '/new/src2/main.c', '/new/today.atmlog', '/new/x.cm', '/new/y.cm', '/notes.cm', '/old.cm',
  ], 'renamed into the policy: copied whole; renamed out of it: removed from the backup');
  t.equal(fs.readFileSync(path.join(dr, 'new/x.cm'), 'utf8'), 'temp\n' + 'tmp\n'.repeat(100), 'a file renamed in arrives with the contents it had while outside');
  t.equal(fs.readFileSync(path.join(dr, 'notes.cm'), 'utf8'), fs.readFileSync(path.join(prod, 'notes.txt'), 'utf8'), 'a link into the policy is copied');
  const p = await snapshot(prod);
  for (const f of pathsOf(b.entries).filter((x) => b.entries[x]!.type === 'file')) t.same(b.entries[f], p.entries[f], `${f} identical`);

  const status = JSON.parse((await drms(['status', '--state', pstate, '--json'])).stdout);
  const detected = (status.events as Array<{ kind: string; path: string; class: string; how: string }>).filter((e) => e.kind === 'detected');
  t.match(detected, [
    { path: '/new/deeper/run.cm', class: 'macros', how: 'created' },
    { path: '/new/rates.table', class: 'tables', how: 'created' },
    { path: '/new/src/main.c', class: 'source', how: 'created' },
    { path: '/new/deeper/more.pl1', class: 'source', how: 'created' },
    { path: '/new/today.atmlog', class: 'logs', how: 'created' },
    { path: '/new/x.cm', class: 'macros', how: 'renamed-in' },
    { path: '/new/readme.cm', class: 'macros', how: 'renamed-in' },
    { path: '/new/y.cm', class: 'macros', how: 'renamed-in' },
    { path: '/notes.cm', class: 'macros', how: 'linked-in' },
  ], 'each detection is an event in status, with its class and how it was found');
  t.ok((status.events as Array<{ kind: string; path: string }>).some((e) => e.kind === 'left-policy' && e.path === '/new/rates.table'), 'leaving the policy is an event');
  t.equal(status.namesServedNatively ?? 0, 0, 'a policy with edges: every rename and unlink was decided in JavaScript');

  // A file declared a record file joins the records class, whatever its name; undeclared, it leaves.
  await sh(`printf 'ATM1' > ledger.dat; setfattr -n user.vos.organization -v stream ledger.dat; printf 'ATM2' >> ledger.dat`, prod);
  await sync();
  t.equal(fs.readFileSync(path.join(dr, 'ledger.dat'), 'utf8'), 'ATM1ATM2', 'a record file outside every named class is mirrored (records class)');
  const declared = JSON.parse((await drms(['status', '--state', pstate, '--json'])).stdout).events.find((e: { path: string }) => e.path === '/ledger.dat');
  t.match(declared, { kind: 'detected', class: 'records', how: 'declared' });
  await sh('setfattr -x user.vos.organization ledger.dat', prod);
  await sync();
  t.notOk(fs.existsSync(path.join(dr, 'ledger.dat')), 'no longer a record file: removed from the backup');

  const v = await drms(['verify', '--state', pstate]);
  t.equal(v.code, 0, `verify: identical under the policy: ${v.stdout}${v.stderr}`);
  t.ok(isMounted(prod));
});

t.test('a class with sync: its fsyncs wait for the backup while the primary runs async', async (t) => {
  const { dir, prod, dr, pstate, bstate, secret } = layout(t);
  const policyFile = path.join(dir, 'policy.json');
  fs.writeFileSync(policyFile, JSON.stringify({ classes: { ledgers: { patterns: ['*.ledger'], sync: 'sync' } } }));
  const backup = await startBackup(t, { target: dr, state: bstate, secret });
  await startPrimary(t, {
    mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret, extra: ['--policy', policyFile, '--sync-timeout', '1', '--on-sync-timeout', 'fail'],
  });
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0);
  backup.proc.kill('SIGKILL');
  await backup.exited;
  const fsync = (file: string) =>
    sh(`'${process.execPath}' -e "const fs = require('fs'); const fd = fs.openSync('${file}', 'w'); fs.writeSync(fd, 'x'); fs.fsyncSync(fd)" 2>/dev/null && echo ok || echo failed`, prod);
  t.equal((await fsync('plain.txt')).trim(), 'ok', 'an async class: fsync returns with the backup down');
  t.equal((await fsync('day.ledger')).trim(), 'failed', 'the sync class: fsync fails (EIO) when the backup does not acknowledge');
});

const BAD: Array<[name: string, text: string, message: RegExp]> = [
  ['unknown key', 'include: ["**"]\nexlude: ["*.tmp"]\n', /line 2\).*unknown key "exlude"/],
  ['not YAML', 'classes:\n  macros: {patterns: ["*.cm"\n', /line \d+\).*not valid YAML or JSON/],
  ['bad organization', 'classes:\n  logs:\n    patterns: ["*.log"]\n    organization: indexed\n', /line 4\).*class logs: organization must be one of/],
  ['mirror not boolean', '{"classes": {"tables": {"mirror": "yes"}}}', /line 1\).*class tables: mirror must be true or false/],
  ['globs not a list', 'exclude: "*.tmp"\n', /line 1\).*exclude must be a list of glob strings/],
  ['class key typo', 'classes:\n  macros:\n    pattern: ["*.cm"]\n', /line 3\).*class macros: unknown key "pattern"/],
  ['fixed without size', 'classes:\n  cards:\n    patterns: ["*.card"]\n    organization: fixed\n', /line 2\).*organization fixed needs a recordSize/],
];

t.test('a malformed policy names the problem and its line, and nothing is mounted', async (t) => {
  const { dir, prod, pstate, secret } = layout(t);
  for (const [name, text, message] of BAD) {
    const file = path.join(dir, `${name.replace(/ /g, '-')}.yaml`);
    fs.writeFileSync(file, text);
    const r = await drms(['primary', '--mount', prod, '--state', pstate, '--to', '127.0.0.1:9', '--secret-file', secret, '--policy', file]);
    t.equal(r.code, 2, `${name}: exit 2`);
    t.match(r.stderr, message, `${name}: ${r.stderr.trim()}`);
    t.ok(r.stderr.includes(file), `${name}: the message names the file`);
    t.notOk(isMounted(prod), `${name}: not mounted`);
  }
  const missing = await drms(['primary', '--mount', prod, '--state', pstate, '--to', '127.0.0.1:9', '--secret-file', secret, '--policy', path.join(dir, 'nope.yaml')]);
  t.equal(missing.code, 2);
  t.match(missing.stderr, /cannot read it/);
});
