// Zero code change: real, unmodified programs run on the mount while it mirrors (SQLite in both journal modes,
// git, tar, make, an editor's save), and the DR copy is checked with the programs' own tools.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { drms, layout, sh, startBackup, startPrimary } from './helpers/cluster.js';
import { snapshot } from './helpers/tree.js';

/** Copies the files of a database from the DR copy when none of them changes during the copy (a stable read). */
async function stableCopy(dir: string, names: string[], into: string): Promise<boolean> {
  const facts = () => names.map((n) => {
    const st = fs.statSync(path.join(dir, n), { bigint: true, throwIfNoEntry: false });
    return st ? `${st.size}:${st.mtimeNs}:${st.ino}` : '-';
  }).join('|');
  for (let attempt = 0; attempt < 50; attempt++) {
    const before = facts();
    fs.rmSync(into, { recursive: true, force: true });
    fs.mkdirSync(into);
    try {
      for (const n of names) if (fs.existsSync(path.join(dir, n))) fs.copyFileSync(path.join(dir, n), path.join(into, n));
    } catch {
      continue; // a file went away mid-copy
    }
    if (facts() === before) return fs.existsSync(path.join(into, names[0]!));
    await new Promise((r) => setTimeout(r, 5));
  }
  return false;
}

/** integrity_check, and with `rows` the row count (a read before the table's creation committed has no table). */
async function integrity(dbDir: string, rows = false): Promise<string> {
  return (await sh(`sqlite3 bank.db 'PRAGMA integrity_check;${rows ? ' SELECT count(*) FROM txn;' : ''}'`, dbDir)).trim();
}

for (const mode of ['delete', 'wal'] as const) {
  t.test(`SQLite (${mode === 'wal' ? 'WAL' : 'rollback journal'}): the DR copy passes integrity_check whenever it is read`, async (t) => {
    const { dir, prod, dr, pstate, bstate, secret } = layout(t);
    const backup = await startBackup(t, { target: dr, state: bstate, secret });
    await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret });
    await sh(`sqlite3 bank.db "PRAGMA journal_mode=${mode}; CREATE TABLE txn(id INTEGER PRIMARY KEY, card TEXT, amount INTEGER, note TEXT);"`, prod);
    const names = ['bank.db', mode === 'wal' ? 'bank.db-wal' : 'bank.db-journal'];
    let reads = 0;
    const problems: string[] = [];
    let writing = true;
    const reader = (async () => {
      while (writing) {
        if (await stableCopy(dr, names, path.join(dir, 'read'))) {
          const out = await integrity(path.join(dir, 'read')).catch((err: Error) => `error: ${err.message}`);
          reads++;
          if (out !== 'ok') problems.push(out);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    // 300 transactions of 5 rows each, from the unmodified sqlite3 shell.
    const script = Array.from({ length: 300 }, (_, i) =>
      `BEGIN; ${Array.from({ length: 5 }, (_, k) => `INSERT INTO txn(card, amount, note) VALUES('4000-${i}-${k}', ${i * 10 + k}, '${'x'.repeat(200)}');`).join(' ')} COMMIT;`).join('\n');
    fs.writeFileSync(path.join(dir, 'load.sql'), script);
    // Rounds of it until the reader has read the DR copy a few times meanwhile: how long one takes depends on the binding.
    let rounds = 0;
    do {
      await sh(`sqlite3 bank.db < ${path.join(dir, 'load.sql')}`, prod, 300_000);
      rounds++;
    } while (reads < 5 && rounds < 20);
    writing = false;
    await reader;
    t.ok(reads >= 5, `the DR copy was read ${reads} times while the workload ran`);
    t.same(problems.slice(0, 3), [], `integrity_check was ok every time (${problems.length} failures)`);
    t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0);
    await stableCopy(dr, names, path.join(dir, 'final'));
    t.equal(await integrity(path.join(dir, 'final'), true), `ok\n${1500 * rounds}`, 'after sync: every committed row is on the DR copy');
    t.equal(await integrity(prod, true), `ok\n${1500 * rounds}`);
  });
}

t.test('git clone and commit, tar extract, make, and an editor-style save on the mount: identical on the DR copy', async (t) => {
  const { dir, prod, dr, pstate, bstate, secret } = layout(t);
  // A source repository outside the mount, to clone from.
  const origin = path.join(dir, 'origin');
  fs.mkdirSync(origin);
  await sh(`git init -q -b main . && for i in $(seq 1 30); do echo "line $i" > f$i.txt; git add f$i.txt; git -c user.email=a@b -c user.name=ops commit -q -m "c$i"; done`, origin);
  // A tarball of a tree of many files.
  const src = path.join(dir, 'tree');
  for (let d = 0; d < 20; d++) {
    fs.mkdirSync(path.join(src, `dir${d}`, 'inner'), { recursive: true });
    for (let f = 0; f < 50; f++) fs.writeFileSync(path.join(src, `dir${d}`, f % 2 ? 'inner' : '', `file${f}.c`), `/* ${d}.${f} */\n`.repeat(f + 1));
  }
  fs.symlinkSync('dir0/file0.c', path.join(src, 'link.c'));
  await sh(`tar czf ${path.join(dir, 'tree.tgz')} -C ${src} .`, dir);

  const backup = await startBackup(t, { target: dr, state: bstate, secret });
  await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret });
  await sh(`
    git clone -q --no-hardlinks ${origin} repo
    cd repo
    for i in $(seq 1 10); do echo "change $i" >> f1.txt; git -c user.email=a@b -c user.name=ops commit -q -am "local $i"; done
    git gc -q
    cd ..
    mkdir extracted && tar xzf ${path.join(dir, 'tree.tgz')} -C extracted
    mkdir build && cd build
    printf '#include <stdio.h>\\nint main(void) { printf("settled\\\\n"); return 0; }\\n' > main.c
    printf 'app: main.o\\n\\tcc -o app main.o\\nmain.o: main.c\\n\\tcc -c main.c\\n' > Makefile
    make -s
    cd ..
    printf 'rate=1\\n' > rates.table
    for i in 2 3 4; do printf "rate=$i\\n" > .rates.table.swp && sync .rates.table.swp && mv .rates.table.swp rates.table; done
  `, prod, 300_000);
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '120'])).code, 0);

  const [p, b] = [await snapshot(prod), await snapshot(dr)];
  t.same(b.entries, p.entries, 'the trees are identical: contents, modes, owners, symlinks, xattrs, mtimes');
  t.equal(Object.keys(p.entries).filter((k) => k.startsWith('/extracted/')).length, 20 * 2 + 20 * 50 + 1, 'tar extracted every entry');
  // Read-only checks on the DR copy (git status would refresh the index without --no-optional-locks).
  const fsck = await sh('git fsck --full --strict 2>&1 && git log --oneline | wc -l', path.join(dr, 'repo'));
  t.match(fsck.trim(), /^40$/m, 'git fsck is clean on the DR copy and the history has all 40 commits');
  t.equal((await sh('git --no-optional-locks status --porcelain', path.join(dr, 'repo'))).trim(), '', 'the DR working tree matches its index');
  t.equal((await sh('./app', path.join(dr, 'build'))).trim(), 'settled', 'the program built by make runs from the DR copy');
  t.equal(fs.readFileSync(path.join(dr, 'rates.table'), 'utf8'), 'rate=4\n', 'the editor-style save landed whole');
  t.notOk(fs.existsSync(path.join(dr, '.rates.table.swp')));
});
