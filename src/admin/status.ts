// status.json under --state: what a running primary or backup says about itself, for `drms status` and `drms sync`.
import fs from 'node:fs';
import path from 'node:path';

export interface LiveStatus {
  role: 'primary' | 'backup';
  pid: number;
  startedAt: string;
  updatedAt: string;
  connected: boolean;
  peer?: string;
  route?: string;
  lastError?: string;
  [key: string]: unknown;
}

const FILE = 'status.json';

export function writeStatus(stateDir: string, status: Omit<LiveStatus, 'updatedAt' | 'pid'>): void {
  const tmp = path.join(stateDir, `.${FILE}.${process.pid}`);
  fs.writeFileSync(tmp, JSON.stringify({ ...status, pid: process.pid, updatedAt: new Date().toISOString() }));
  fs.renameSync(tmp, path.join(stateDir, FILE));
}

/** The last status written, with whether its process is still alive. */
export function readStatus(stateDir: string): (LiveStatus & { running: boolean }) | undefined {
  let raw: string;
  try {
    raw = fs.readFileSync(path.join(stateDir, FILE), 'utf8');
  } catch {
    return undefined;
  }
  const s = JSON.parse(raw) as LiveStatus;
  return { ...s, running: isAlive(s.pid) };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
