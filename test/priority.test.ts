import t from 'tap';
import fs from 'node:fs';
import { layout, NATIVE_BINDING, startBackup, startPrimary } from './helpers/cluster.js';

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
  t.ok(others.length > 0);
  t.same(others.filter((x) => x.nice !== 0), [], "the primary's other threads stay at 0");
  if (NATIVE_BINDING) t.ok(others.some((x) => x.name.startsWith('drms-')), 'the FUSE threads are among them');
});
