// The operator's console against a running primary and backup: the dashboard in a real browser (Debian's
// chromium driven by playwright-core), /metrics, the JSON API, drms report, alerts, and the token and loopback rules.
import t from 'tap';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { drms, layout, sh, startBackup, startNode, startPrimary } from './helpers/cluster.js';

const CHROMIUM = '/usr/bin/chromium';
const OUTPUT = path.resolve(import.meta.dirname, '../test-output');

function get(url: string, token?: string): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    http.get(url, { headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: String(res.headers['content-type']) }));
    }).on('error', reject);
  });
}

/** Every line of Prometheus text exposition format: comments, or `name{labels} value`. Returns samples. */
function parseProm(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (/^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$/.test(line)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${line}`);
    samples.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return samples;
}

const kindCount = (s: Map<string, number>, kind: string) => s.get(`drms_operations_total{kind="${kind}",role="primary"}`) ?? 0;

/** A node script: create `file`, `n` writes of 100 bytes, close. Through FUSE: create, n writes, times at close. */
const writes = (file: string, n: number) =>
  `'${process.execPath}' -e "const fs = require('fs'); const fd = fs.openSync('${file}', 'wx'); for (let i = 0; i < ${n}; i++) fs.writeSync(fd, Buffer.alloc(100, 65), 0, 100, i * 100); fs.closeSync(fd)"`;

t.test('dashboard, metrics, report and alerts against a live primary and backup', async (t) => {
  const { dir, prod, dr, pstate, bstate, secret } = layout(t);
  const alertsFile = path.join(dir, 'alerts.jsonl');
  const backup = await startBackup(t, { target: dr, state: bstate, secret });
  const primary = await startPrimary(t, {
    mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret,
    extra: ['--admin', '0', '--alert-command', `cat >> ${alertsFile}`, '--alert-disconnected', '2'],
  });
  const listening = await primary.waitFor('admin endpoint listening');
  const base = `http://${String(listening.admin)}`;
  t.match(String(listening.admin), /^127\.0\.0\.1:\d+$/, 'loopback by default');
  const token = fs.readFileSync(path.join(pstate, 'admin.token'), 'utf8').trim();
  t.equal(fs.statSync(path.join(pstate, 'admin.token')).mode & 0o777, 0o600, 'token file generated with mode 600');
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0);

  // Authentication and exposure.
  t.equal((await get(`${base}/healthz`)).status, 200, '/healthz needs no token');
  for (const p of ['/', '/api/status', '/api/files', '/api/events', '/metrics']) {
    t.equal((await get(`${base}${p}`)).status, 401, `${p} without a token: 401`);
    t.equal((await get(`${base}${p}`, 'wrong-token-wrong-token')).status, 401, `${p} with a wrong token: 401`);
  }
  const port = Number(String(listening.admin).split(':')[1]);
  const external = Object.values(os.networkInterfaces()).flat().find((i) => i && i.family === 'IPv4' && !i.internal);
  if (external) {
    const err = await get(`http://${external.address}:${port}/healthz`).then(() => undefined, (e: NodeJS.ErrnoException) => e.code);
    t.equal(err, 'ECONNREFUSED', `not reachable on ${external.address}`);
  }

  // A known workload: the counters and the report count exactly its operations.
  const before = parseProm((await get(`${base}/metrics`, token)).body);
  await sh(`${writes('a.cm', 10)} && ${writes('b.table', 3)} && mv b.table c.table`, prod);
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0);
  const metrics = await get(`${base}/metrics`, token);
  t.match(metrics.type, /^text\/plain; version=0\.0\.4/);
  const after = parseProm(metrics.body);
  t.equal(kindCount(after, 'write') - kindCount(before, 'write'), 13, 'drms_operations_total{kind="write"} rose by the 13 writes');
  t.equal(kindCount(after, 'create') - kindCount(before, 'create'), 2, 'and by 2 creates');
  t.equal(kindCount(after, 'rename') - kindCount(before, 'rename'), 1, 'and by 1 rename');
  t.equal(after.get('drms_bytes_total{kind="write",role="primary"}')! - (before.get('drms_bytes_total{kind="write",role="primary"}') ?? 0), 1300, 'bytes of the writes');
  const status = JSON.parse((await get(`${base}/api/status`, token)).body);
  const all = [...after].filter(([k]) => k.startsWith('drms_operations_total{')).reduce((n, [, v]) => n + v, 0);
  t.equal(all, status.lastSeq, 'every journaled operation is counted once');
  t.equal(after.get('drms_connected{role="primary"}'), 1);
  t.equal(after.get('drms_epoch{role="primary"}'), 1);
  t.equal(after.get('drms_peer_epoch{role="primary"}'), 1);
  t.equal(after.get('drms_fenced{role="primary"}'), 0);
  t.equal(after.get('drms_lag_operations{role="primary"}'), 0);
  t.ok(after.get('drms_class_operations_total{class="macros",role="primary"}')! >= 12, 'per-class counts');

  const csv = await drms(['report', '--state', pstate, '--since', '1h', '--files', '--format', 'csv']);
  t.equal(csv.code, 0, csv.stderr);
  const rows = Object.fromEntries(csv.stdout.trim().split('\n').slice(1).map((l) => l.split(',')).map((c) => [c[0], c]));
  t.equal(rows['/a.cm']?.[2], '12', 'a.cm: create, 10 writes, times at close');
  t.equal(rows['/a.cm']?.[1], 'macros');
  t.equal(rows['/b.table']?.[2], '6', 'b.table: create, 3 writes, times at close, the rename');
  t.equal(rows['*']?.[2], String(status.lastSeq), 'the node row counts every operation');
  const backupCsv = await drms(['report', '--state', bstate, '--since', '1h', '--files', '--format', 'csv']);
  t.match(backupCsv.stdout, /\n\/a\.cm,macros,12,1000,/, 'the backup applied the same operations');

  // The dashboard in a browser: sign in, watch throughput and lag move, see a new file, see the backup go away.
  fs.mkdirSync(OUTPUT, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  t.teardown(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1366, height: 768 } });
  await page.goto(base);
  await page.fill('#token', token);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#connection.ok', { timeout: 10_000 });
  t.equal(await page.textContent('#role'), `primary · ${prod}`);
  t.equal(await page.textContent('#epoch'), '1', 'the epoch is shown');
  await page.waitForFunction(() => document.querySelector('#peer-epoch')?.textContent === '1', undefined, { timeout: 10_000 });
  const writer = spawn('bash', ['-c', 'for i in $(seq 1 2000); do echo "txn $i" >> live.atmlog; sleep 0.005; done'], { cwd: prod, stdio: 'ignore' });
  t.teardown(() => void writer.kill());
  await page.waitForFunction(() => Number(document.getElementById('ops-rate')!.textContent) > 0, undefined, { timeout: 10_000 });
  const rates = new Set<string>();
  const lags = new Set<string>();
  for (let i = 0; i < 8; i++) {
    rates.add((await page.textContent('#ops-rate'))!);
    lags.add((await page.textContent('#lag-ops'))! + '/' + (await page.textContent('#applied-seq'))!);
    await page.waitForTimeout(500);
  }
  t.ok(rates.size > 1, `throughput changes on the page: ${[...rates].join(', ')} ops/s`);
  t.ok(lags.size > 1, `lag and applied seq change: ${[...lags].join(', ')}`);
  t.ok(await page.$eval('#ops-chart polyline', (el) => el.getAttribute('points')!.split(' ').length > 3), 'throughput chart drawn');
  await sh('echo "&echo hello" > fresh.cm', prod);
  await page.waitForSelector('tr[data-path="/fresh.cm"]', { timeout: 10_000 });
  t.equal(await page.textContent('tr[data-path="/fresh.cm"] td:nth-child(2)'), 'macros', 'a new file appears in the per-file table with its class');
  await page.keyboard.press('/');
  t.equal(await page.evaluate(() => document.activeElement?.id), 'filter', '"/" focuses the filter (usable without a mouse)');
  await page.keyboard.type('fresh');
  t.equal(await page.locator('#files tr').count(), 1, 'the filter narrows the table');
  t.match(await page.textContent('#events'), /critical file detected \/fresh\.cm \(macros\)/, 'the detection is in recent events');

  backup.proc.kill('SIGKILL');
  const killedAt = Date.now();
  await page.waitForSelector('#connection.bad', { timeout: 15_000 });
  t.equal(await page.textContent('#connection'), 'DISCONNECTED');
  t.comment(`disconnection shown ${Date.now() - killedAt} ms after the backup was killed`);
  await page.screenshot({ path: path.join(OUTPUT, 'dashboard.png'), fullPage: true });
  t.ok(fs.statSync(path.join(OUTPUT, 'dashboard.png')).size > 10_000, `screenshot: ${path.join(OUTPUT, 'dashboard.png')}`);
  writer.kill();

  // The disconnection alert ran the command (JSON on stdin).
  const deadline = Date.now() + 15_000;
  let alerts: Array<{ alert: string; state: string; role: string }> = [];
  while (Date.now() < deadline) {
    alerts = fs.existsSync(alertsFile) ? fs.readFileSync(alertsFile, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
    if (alerts.some((a) => a.alert === 'disconnected')) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  t.match(alerts.find((a) => a.alert === 'disconnected'), { state: 'firing', role: 'primary' }, 'the alert command got the disconnection');
});

t.test('drift found by verify raises an alert through the webhook', async (t) => {
  const { prod, dr, pstate, bstate, secret } = layout(t);
  const received: Array<{ alert: string; state: string; message: string }> = [];
  const hook = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      received.push(JSON.parse(body));
      res.end();
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  t.teardown(() => hook.close());
  fs.writeFileSync(path.join(prod, 'rates.table'), 'rate 1\n');
  const backup = await startBackup(t, { target: dr, state: bstate, secret });
  await startPrimary(t, {
    mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret,
    extra: ['--alert-webhook', `http://127.0.0.1:${(hook.address() as { port: number }).port}/alerts`],
  });
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0);
  fs.writeFileSync(path.join(dr, 'rates.table'), 'rate 9\n');
  t.equal((await drms(['verify', '--state', pstate])).code, 1);
  const deadline = Date.now() + 10_000;
  while (!received.some((a) => a.alert === 'drift') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  t.match(received.find((a) => a.alert === 'drift'), { state: 'firing', message: /1 difference/ }, 'the webhook got the drift alert');
});

t.test('console flag mistakes are refused before anything starts', async (t) => {
  const { prod, pstate, secret } = layout(t);
  const bad = await drms(['primary', '--mount', prod, '--state', pstate, '--to', '127.0.0.1:9', '--secret-file', secret, '--admin', 'localhost']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--admin must be \[HOST:\]PORT/);
  const hook = await drms(['primary', '--mount', prod, '--state', pstate, '--to', '127.0.0.1:9', '--secret-file', secret, '--alert-webhook', 'mailto:ops']);
  t.equal(hook.code, 2);
  t.match(hook.stderr, /--alert-webhook must be an http\(s\) URL/);
});

t.test('watchdog: a backup whose disk hangs is stalled replication on the primary and a stuck apply on the backup', async (t) => {
  const { dir, prod, pstate, bstate, secret } = layout(t);
  // The DR copy lives on a bindfs mount; freezing bindfs makes every apply hang while the backup still answers pings.
  const real = path.join(dir, 'dr-real');
  const dr = path.join(dir, 'dr');
  fs.mkdirSync(real);
  fs.mkdirSync(dr);
  await sh(`bindfs --no-allow-other ${real} ${dr}`, dir);
  const bindfsPid = Number((await sh(`pgrep -f "bindfs --no-allow-other ${real}"`, dir)).trim().split('\n')[0]);
  t.teardown(async () => {
    process.kill(bindfsPid, 'SIGCONT');
    await sh(`fusermount -uz ${dr} || true`, dir);
  });
  const alerts = path.join(dir, 'alerts.jsonl');
  const backup = startNode(t, ['backup', '--listen', '127.0.0.1:0', '--target', dr, '--state', bstate, '--secret-file', secret, '--alert-stuck', '2', '--alert-command', `cat >> ${alerts}`]);
  const port = Number(String((await backup.waitFor('backup listening')).listen).split(':').pop());
  const primary = await startPrimary(t, {
    mount: prod, state: pstate, to: `127.0.0.1:${port}`, secret, extra: ['--alert-stuck', '2', '--alert-command', `cat >> ${alerts}`],
  });
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0);
  process.kill(bindfsPid, 'SIGSTOP');
  await sh('echo "txn while the DR disk hangs" > hung.log', prod);
  const seen = async (alert: string, role: string) => {
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      const lines = fs.existsSync(alerts) ? fs.readFileSync(alerts, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
      const hit = lines.find((a: { alert: string; role: string }) => a.alert === alert && a.role === role);
      if (hit) return hit;
      await new Promise((r) => setTimeout(r, 200));
    }
    return undefined;
  };
  t.match(await seen('replication-stalled', 'primary'), { state: 'firing', message: /connected, \d+ ops behind, and nothing applied/ }, 'the primary: replication stalled');
  t.match(await seen('apply-stuck', 'backup'), { state: 'firing', message: /one batch has been applying for/ }, 'the backup: apply stuck');
  t.equal(JSON.parse((await drms(['status', '--state', pstate, '--json'])).stdout).connected, true, 'still connected: a stall, not a disconnection');
  process.kill(bindfsPid, 'SIGCONT');
  t.equal((await drms(['sync', '--state', pstate, '--timeout', '60'])).code, 0, 'the disk back: replication resumes');
  t.match(await seen('replication-stalled', 'primary').then(() => primary.waitFor(/ALERT replication-stalled resolved/, 10_000)), { alert: 'replication-stalled', state: 'resolved' });
});
