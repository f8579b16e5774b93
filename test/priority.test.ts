import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { layout, NATIVE_BINDING, startBackup, startNode, startPrimary } from './helpers/cluster.js';

/** Each thread of `pid`: its name and nice value (/proc/<pid>/task/<tid>/stat, field 19). */
function threadNice(pid: number): Array<{ tid: number; name: string; nice: number }> {
  return fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
    const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { tid: Number(tid), name: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), nice: Number(fields[16]) };
  });
}

t.test('the JavaScript threads that ship and apply run at --nice; the FUSE threads keep theirs', async (t) => {
  const l = layout(t);
  const backup = await startBackup(t, { target: l.dr, state: l.bstate, secret: l.secret, extra: ['--nice', '-5'] });
  const primary = await startPrimary(t, { mount: l.prod, state: l.pstate, to: `127.0.0.1:${backup.port}`, secret: l.secret });
  const bThreads = threadNice(backup.proc.pid!);
  const pThreads = threadNice(primary.proc.pid!);
  t.equal(bThreads.find((x) => x.tid === backup.proc.pid)!.nice, -5, "the backup's JavaScript thread");
  t.equal(pThreads.find((x) => x.tid === primary.proc.pid)!.nice, -10, "the primary's JavaScript thread, by default");
  t.equal((await primary.waitFor('mounted')).nice, -10, 'the primary says so');
  t.equal((await backup.waitFor('backup listening')).nice, -5, 'the backup says so');
  // Started before it: V8's and libuv's threads, and (native binding) the FUSE threads that serve applications.
  const others = pThreads.filter((x) => x.tid !== primary.proc.pid);
  t.ok(others.length > 0, 'the primary has other threads');
  t.same(others.filter((x) => x.nice !== 0), [], "the primary's other threads stay at 0");
  if (NATIVE_BINDING) t.ok(others.some((x) => x.name.startsWith('drms-')), 'the FUSE threads are among them');
});

t.test('a backup that may not raise its priority says so, and serves', async (t) => {
  const l = layout(t);
  // Run as nobody (uid 65534), which may lower its priority but not raise it: its directories are its own.
  fs.chmodSync(l.dir, 0o755);
  for (const d of [l.dr, l.bstate]) {
    fs.mkdirSync(d);
    fs.chownSync(d, 65534, 65534);
  }
  const secret = path.join(l.bstate, 'secret');
  fs.copyFileSync(l.secret, secret);
  fs.chownSync(secret, 65534, 65534);
  const backup = startNode(t, ['backup', '--listen', '127.0.0.1:0', '--target', l.dr, '--state', l.bstate, '--secret-file', secret], undefined, 65534);
  const warned = await backup.waitFor(/cannot set the priority of the JavaScript thread/);
  t.equal(warned.nice, -10, 'the warning names the nice value asked for');
  t.match(String((warned.err as { message?: string } | undefined)?.message), /EACCES|permission denied/i, 'and why');
  await backup.waitFor('backup listening');
  t.equal(threadNice(backup.proc.pid!).find((x) => x.tid === backup.proc.pid)!.nice, 0, 'it keeps its own');
});
