// The mount scripts against a temporary config: mount, refuse a second mount, wait for open files, drain and
// unmount, force a hung mount down; their error paths; --help; shellcheck; the systemd units.
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { DRMS, drms, isMounted, layout, sh, startBackup } from './helpers/cluster.js';

const run = promisify(execFile);
const SCRIPTS = path.resolve(import.meta.dirname, '../mount-scripts');

async function script(name: string, args: string[], timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(path.join(SCRIPTS, name), args, { timeout: timeoutMs });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

t.test('every script has --help and passes shellcheck; the systemd units verify', async (t) => {
  const scripts = fs.readdirSync(SCRIPTS).filter((f) => fs.statSync(path.join(SCRIPTS, f)).isFile());
  t.ok(scripts.includes('drms-mount') && scripts.includes('drms-umount'));
  for (const s of scripts) {
    const r = await script(s, ['--help']);
    t.equal(r.code, 0, `${s} --help exits 0`);
    t.match(r.stdout, /^usage: /m, `${s} --help prints usage`);
  }
  const lint = await run('shellcheck', scripts.map((s) => path.join(SCRIPTS, s))).then(() => '', (e: { stdout: string }) => e.stdout);
  t.equal(lint, '', 'shellcheck finds nothing');
  const { dir } = layout(t);
  for (const unit of ['drms-primary@.service', 'drms-backup@.service']) {
    const text = fs.readFileSync(path.join(SCRIPTS, 'systemd', unit), 'utf8');
    t.match(text, /^Restart=(on-failure|always)$/m, `${unit} restarts on failure`);
    // Verify an instance of the template, pointing at this checkout's drms.
    const instance = path.join(dir, unit.replace('@', '@atm'));
    fs.writeFileSync(instance, text.replaceAll('/usr/local/bin/drms', DRMS));
    const v = await run('systemd-analyze', ['verify', instance]).then(() => '', (e: { stderr: string }) => e.stderr);
    t.equal(v.split('\n').filter((l) => l.includes(path.basename(instance)) && !/Failed to (load|put)|cannot be loaded|Unit .*not found/.test(l)).join('\n'), '', `${unit} passes systemd-analyze verify`);
  }
});

t.test('drms-mount and drms-umount over a temporary config', async (t) => {
  const { dir, prod, dr, pstate, bstate, secret } = layout(t);
  const backup = await startBackup(t, { target: dr, state: bstate, secret });
  const config = path.join(dir, 'etc');
  fs.mkdirSync(config);
  fs.writeFileSync(path.join(config, 'atm.json'), JSON.stringify({ sets: [{ name: 'atm', mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secretFile: secret }] }));
  t.teardown(() => script('drms-umount', ['--config', config, '--force', '--wait', '1']));

  const up = await script('drms-mount', ['--config', config]);
  t.equal(up.code, 0, up.stderr);
  t.match(up.stdout, /atm mounted over .*prod \(pid \d+, log .*primary\.log\)/);
  t.ok(isMounted(prod));
  const again = await script('drms-mount', ['--config', config]);
  t.equal(again.code, 1, 'a second mount is refused');
  t.match(again.stderr, /atm: .*prod is already mounted \(fuse\.drms\)/);

  // An application holds a file open: the safe unmount waits, then says who.
  await sh('echo "txn 1" > open.log', prod);
  const holder = spawn('bash', ['-c', `exec 3>>${path.join(prod, 'open.log')}; echo "txn 2" >&3; exec sleep 60`], { stdio: 'ignore' });
  t.teardown(() => void holder.kill());
  await new Promise((r) => setTimeout(r, 300));
  const busy = await script('drms-umount', ['--config', config, '--wait', '2']);
  t.equal(busy.code, 1, 'unmount refused while a file is open');
  t.match(busy.stderr, new RegExp(`still open by pid\\(s\\) .*${holder.pid}`));
  t.ok(isMounted(prod), 'still mounted');
  holder.kill();
  await new Promise((r) => holder.on('exit', r));
  const down = await script('drms-umount', ['--config', config]);
  t.equal(down.code, 0, down.stderr);
  t.match(down.stdout, /atm unmounted from/);
  t.notOk(isMounted(prod));
  t.equal(fs.readFileSync(path.join(dr, 'open.log'), 'utf8'), 'txn 1\ntxn 2\n', 'drained: the backup has every write');
  t.match((await script('drms-umount', ['--config', config])).stdout, /atm: not mounted/);

  // A primary that no longer answers: --force aborts its FUSE connection and detaches the mount.
  t.equal((await script('drms-mount', ['--config', config, '--set', 'atm'])).code, 0);
  const pid = Number(fs.readFileSync(path.join(pstate, 'primary.pid'), 'utf8'));
  // The primary runs with the V8 flags of drms's first line (its heap sizing: see src/cli/main.ts).
  const shebang = fs.readFileSync(DRMS, 'utf8').split('\n', 1)[0]!.split(' ').filter((w) => w.startsWith('--'));
  t.ok(shebang.length > 0, 'drms\'s first line gives node flags');
  t.strictSame(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((w) => shebang.includes(w)), shebang, 'the primary drms-mount started runs with them');
  process.kill(pid, 'SIGSTOP');
  const forced = await script('drms-umount', ['--config', config, '--force']);
  t.equal(forced.code, 0, forced.stderr);
  t.match(forced.stderr, /the mount hangs; aborting its FUSE connection/);
  t.notOk(isMounted(prod), 'a hung mount is gone after --force');
  const gone = () => !fs.existsSync(`/proc/${pid}`) || / Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  for (let i = 0; i < 50 && !gone(); i++) await new Promise((r) => setTimeout(r, 100));
  t.ok(gone(), 'and its process is gone');
});

t.test('the scripts\' error paths say what is wrong', async (t) => {
  const { dir, prod, pstate, secret } = layout(t);
  const missing = await script('drms-mount', ['--config', path.join(dir, 'nope.json')]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /--config .*nope\.json: ENOENT/);
  const file = path.join(dir, 'a.json');
  fs.writeFileSync(file, JSON.stringify({ sets: [{ name: 'atm', mount: path.join(dir, 'no-such-dir'), state: pstate, to: '127.0.0.1:9', secretFile: secret }] }));
  const noDir = await script('drms-mount', ['--config', file]);
  t.equal(noDir.code, 1);
  t.match(noDir.stderr, /atm: .*no-such-dir is not a directory/);
  t.match(noDir.stderr, /warning: no route to the backup answers/);
  t.match(noDir.stderr, /checks failed; nothing was mounted/);
  fs.writeFileSync(file, JSON.stringify({ sets: [{ name: 'atm', mount: prod, state: pstate, to: '127.0.0.1:9', secretFile: secret }] }));
  const noSet = await script('drms-umount', ['--config', file, '--set', 'cards']);
  t.equal(noSet.code, 1);
  t.match(noSet.stderr, /no set named "cards" .*there are: atm/);
  t.match((await script('drms-mount', ['--bogus'])).stderr, /unknown argument: --bogus/);
  t.match((await script('drms-umount', ['--wait', 'soon'])).stderr, /--wait must be a whole number of seconds/);
  t.equal((await drms(['sets', '--config', file])).stdout, `atm\t${file}\t${prod}\t${pstate}\n`, 'drms sets lists name, file, mount, state');
});
