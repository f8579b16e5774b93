// The admin endpoint (--admin): the dashboard, its JSON API and live stream, and /metrics, behind a bearer token.
// Loopback unless a host is given. /healthz alone answers without the token.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { NodeReport } from '../cli/report.js';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';
import { readPrivateFile } from '../wire/private-file.js';
import type { Activity } from './activity.js';
import type { EventLog } from './events.js';

export interface AdminSource {
  status(): NodeReport;
  activity: Activity;
  events: EventLog;
  metrics: Registry;
  /** The seq up to which the backup has applied (files newer than it are pending). */
  ackedSeq(): number;
}

export interface AdminServer {
  address: AddressInfo;
  close(): Promise<void>;
}

const COOKIE = 'drms_admin';
const STREAM_MS = 1000;
const DASHBOARD = new URL('./dashboard.html', import.meta.url);

/** `[HOST:]PORT`; the host defaults to loopback, so the endpoint is not exposed unless asked. */
export function parseAdminAddress(v: string): { host: string; port: number } {
  const m = /^(?:(.+):)?(\d+)$/.exec(v.trim());
  const port = Number(m?.[2]);
  if (!m || !Number.isInteger(port) || port > 65535) throw new ConfigError(`--admin must be [HOST:]PORT, such as 8080 or 127.0.0.1:8080, not "${v}"`);
  return { host: m[1]?.replace(/^\[|\]$/g, '') ?? '127.0.0.1', port };
}

/** The token from `file`, created (mode 600) with a random token when absent. */
export function adminToken(file: string, log: Logger): string {
  if (!fs.existsSync(file)) {
    fs.writeFileSync(file, randomBytes(24).toString('base64url') + '\n', { mode: 0o600, flag: 'wx' });
    log.info({ path: file }, 'admin token created');
  }
  const token = readPrivateFile(file, 'admin token file').toString().trim();
  if (token.length < 16) throw new ConfigError(`admin token file ${file} holds fewer than 16 characters`, { path: file });
  return token;
}

export async function serveAdmin(listen: { host: string; port: number }, token: string, src: AdminSource, log: Logger): Promise<AdminServer> {
  const expected = Buffer.from(token);
  const matches = (given: string | undefined) => {
    const g = Buffer.from(given ?? '');
    return g.length === expected.length && timingSafeEqual(g, expected);
  };
  const authorized = (req: http.IncomingMessage) => {
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const cookie = (req.headers.cookie ?? '').split(/;\s*/).find((c) => c.startsWith(`${COOKIE}=`))?.slice(COOKIE.length + 1);
    return matches(bearer) || matches(cookie && decodeURIComponent(cookie));
  };
  const json = (res: http.ServerResponse, code: number, body: unknown) => {
    res.writeHead(code, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(body));
  };
  const page = fs.readFileSync(DASHBOARD, 'utf8');
  const snapshot = () => ({
    status: src.status(),
    history: src.activity.recentHistory().slice(-120),
    events: src.events.recent(30),
    files: src.activity.files(src.ackedSeq(), 200),
  });
  const streams = new Set<http.ServerResponse>();

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://admin');
    const route = `${req.method} ${url.pathname}`;
    if (route === 'GET /healthz') return void res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    if (route === 'POST /login') return void login(req, res, matches);
    if (!authorized(req)) {
      if (url.pathname === '/') return void res.writeHead(401, { 'content-type': 'text/html' }).end(LOGIN_PAGE);
      return json(res, 401, { error: 'authentication required: Authorization: Bearer <token from the admin token file>' });
    }
    switch (route) {
      case 'GET /':
        return void res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(page);
      case 'GET /api/status':
        return json(res, 200, src.status());
      case 'GET /api/files':
        return json(res, 200, src.activity.files(src.ackedSeq(), Number(url.searchParams.get('limit')) || 500));
      case 'GET /api/events':
        return json(res, 200, src.events.recent(Number(url.searchParams.get('limit')) || 100));
      case 'GET /api/history':
        return json(res, 200, src.activity.recentHistory());
      case 'GET /api/stream':
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
        res.write(`data: ${JSON.stringify(snapshot())}\n\n`);
        streams.add(res);
        req.on('close', () => streams.delete(res));
        return;
      case 'GET /metrics':
        src.metrics.metrics().then((text) => res.writeHead(200, { 'content-type': src.metrics.contentType }).end(text),
          (err: Error) => json(res, 500, { error: err.message }));
        return;
      default:
        return json(res, 404, { error: `no such endpoint: ${route}` });
    }
  });
  const tick = setInterval(() => {
    if (!streams.size) return;
    const data = `data: ${JSON.stringify(snapshot())}\n\n`;
    for (const res of streams) res.write(data);
  }, STREAM_MS);
  tick.unref();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(listen.port, listen.host, resolve));
  server.on('error', (err) => log.error({ err }, 'admin endpoint failed'));
  const address = server.address() as AddressInfo;
  log.info({ admin: `${address.address}:${address.port}` }, 'admin endpoint listening');
  return {
    address,
    close: () => {
      clearInterval(tick);
      for (const res of streams) res.end();
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** A form post of the token sets an HttpOnly cookie: the browser's way to send it (EventSource sends no headers). */
function login(req: http.IncomingMessage, res: http.ServerResponse, matches: (t: string | undefined) => boolean): void {
  let body = '';
  req.on('data', (d: Buffer) => {
    body += d;
    if (body.length > 4096) req.destroy();
  });
  req.on('end', () => {
    const token = new URLSearchParams(body).get('token')?.trim();
    if (!matches(token)) return void res.writeHead(401, { 'content-type': 'text/html' }).end(LOGIN_PAGE.replace('<!--error-->', '<p role="alert">Wrong token.</p>'));
    res.writeHead(303, { location: '/', 'set-cookie': `${COOKIE}=${encodeURIComponent(token!)}; HttpOnly; SameSite=Strict; Path=/` }).end();
  });
}

const LOGIN_PAGE = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>drms: sign in</title>
<style>body{font:16px system-ui,sans-serif;margin:4rem auto;max-width:28rem}input,button{font:inherit;padding:.4rem}</style></head>
<body><h1>drms</h1><form method="post" action="/login"><!--error-->
<label for="token">Admin token (the admin token file on this node)</label><br>
<input id="token" name="token" type="password" autocomplete="off" autofocus size="32"> <button type="submit">Sign in</button>
</form></body></html>`;
