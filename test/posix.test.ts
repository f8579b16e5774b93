// POSIX behaviour through the mount, pjdfstest style: the same list of operations (rename over, link counts,
// errors, permission checks as another user, timestamps) gives the same results on a plain directory and through
// drms, and the backup ends identical.
import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { drms, layout, NATIVE_BINDING, startBackup, startPrimary } from './helpers/cluster.js';
import { mtimeDrift, snapshot } from './helpers/tree.js';

const run = promisify(execFile);
const PROBE = path.resolve(import.meta.dirname, 'fixtures/posix-ops.mjs');

/** What only the native binding offers (nanosecond times, fallocate) is compared when it serves the mount. */

/** Known differences of the fuse-native binding (libfuse2), each with its reason. */
const FUSE_NATIVE_GAPS: Record<string, string> = {
  'sgid-noexec-write: mode after': "without KILLPRIV_V2 the kernel's FUSE client clears set-group-ID only from a group-executable file (fuse_setattr); the VFS also clears it when the writer is not in the file's group",
};

async function probe(dir: string): Promise<unknown[]> {
  const part = async (name: string) => JSON.parse((await run(process.execPath, [PROBE, dir, '--', name])).stdout) as unknown[];
  const root = [...await part('root'), ...(NATIVE_BINDING ? await part('native') : [])];
  // The permission checks run as nobody: the kernel's checks through the mount (default_permissions) must match.
  // The test's directory (mkdtemp: 0700) must let nobody through, or every check would answer EACCES on both sides.
  fs.chmodSync(path.dirname(dir), 0o755);
  fs.chmodSync(dir, 0o755);
  const other = JSON.parse((await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, PROBE, dir, '--', 'other'])).stdout) as Array<[string, unknown]>;
  if (other.find(([label]) => label === 'create in a 0777 dir')?.[1] !== 'ok') throw new Error(`the checks as nobody did not reach ${dir}: ${JSON.stringify(other)}`);
  return [...root, ...other];
}

/** The native binding serves requests over io_uring when the kernel offers it (Linux 6.14+), else through /dev/fuse. */
const URING_PARAM = '/sys/module/fuse/parameters/enable_uring';
const URING = NATIVE_BINDING && fs.existsSync(URING_PARAM);
const PATHS = NATIVE_BINDING ? [{ name: 'over io_uring', extra: [] as string[], skip: URING ? false : 'this kernel has no FUSE over io_uring' }, { name: 'through /dev/fuse', extra: ['--no-io-uring'], skip: false }] : [{ name: '', extra: [], skip: false }];

for (const requests of PATHS) t.test(`the same POSIX operations give the same results on ext4 and through drms ${requests.name}`, { skip: requests.skip }, async (t) => {
  const { dir, prod, dr, pstate, bstate, secret } = layout(t);
  const plain = path.join(dir, 'plain');
  fs.mkdirSync(plain);
  const expected = await probe(plain);
  const backup = await startBackup(t, { target: dr, state: bstate, secret });
  // The kernel's switch starts off (as on a new machine): drms turns it on itself.
  if (URING && !requests.extra.length) fs.writeFileSync(URING_PARAM, 'N');
  const primary = await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret, extra: requests.extra });
  const actual = await probe(prod);
  if (NATIVE_BINDING) {
    const status = JSON.parse((await drms(['status', '--state', pstate, '--json'])).stdout) as { ringEntries: number };
    if (requests.extra.length) t.equal(status.ringEntries, 0, 'every request came through /dev/fuse');
    else {
      // Nothing said where another test file's primary (two run at a time) turned the global switch on between the
      // write above and this start: this one found it on, as a primary does that needs to say nothing.
      const said = primary.logs.find((l) => l.fuseIoUring !== undefined)?.fuseIoUring;
      t.ok(said === 'turned on' || said === undefined, `drms turned fuse.enable_uring on and said so, or found it on (said: ${String(said)})`);
      t.equal(fs.readFileSync(URING_PARAM, 'utf8').trim(), 'Y', 'the switch is on');
      t.ok(status.ringEntries > 0, `requests were served over io_uring (${status.ringEntries} ring entries in use)`);
    }
  }
  const labels = expected.map((e) => (e as [string])[0]);
  t.equal(actual.length, expected.length, 'every operation ran');
  for (const [i, label] of labels.entries()) t.same(actual[i], expected[i], label, { todo: NATIVE_BINDING ? undefined : FUSE_NATIVE_GAPS[label] });
  t.equal((await drms(['sync', '--state', pstate])).code, 0);
  const [p, b] = [await snapshot(prod), await snapshot(dr)];
  t.same(b.entries, p.entries, 'the backup is identical');
  t.same(b.linkGroups, p.linkGroups);
  t.same(mtimeDrift(p, b), [], 'times agree');
  if (NATIVE_BINDING) {
    const ns = (root: string) => String(fs.lstatSync(path.join(root, 'ns'), { bigint: true }).mtimeNs);
    t.equal(ns(dr), ns(prod), 'the backup has the same time to the nanosecond');
  }
});
