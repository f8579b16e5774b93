// A client that authenticates to a backup as a primary and sends it batches of entries it crafts.
import net from 'node:net';
import { encodeEntry, type JournalEntry } from '../../dist/journal/entry.js';
import { newNonce, proof } from '../../dist/wire/auth.js';
import { encodeBatch, FrameType, PROTOCOL_VERSION, unpackBody } from '../../dist/wire/frame.js';
import { PeerConnection } from '../../dist/wire/peer.js';

export type Entry = Partial<JournalEntry> & Record<string, unknown>;

/** Authenticates as a primary with journal `journalId` (at `epoch`); the connection and the backup's reply to it. */
export async function connectAsPrimary(port: number, secret: Buffer, journalId: string, epoch = 1) {
  const socket = net.connect({ host: '127.0.0.1', port });
  await new Promise((r) => socket.once('connect', r));
  const conn = new PeerConnection(socket);
  const nonce = newNonce();
  conn.send(FrameType.Hello, { version: PROTOCOL_VERSION, nonce, journalId, epoch, lineage: [{ epoch, journalId, since: '' }] });
  const ch = unpackBody<{ nonce: Buffer }>((await conn.read(5000))!);
  conn.send(FrameType.Auth, { proof: proof(secret, 'primary', ch.nonce, nonce) });
  return { conn, reply: (await conn.read(5000))! };
}

/** A batch of `entries` on `conn` (crafted ones as they are, Buffers as encoded entries). */
export function sendEntries(conn: PeerConnection, entries: Array<Entry | Buffer>): void {
  const raw = entries.map((e) => (Buffer.isBuffer(e) ? e : encodeEntry({ ts: Date.now(), ...e } as JournalEntry)));
  conn.sendParts(FrameType.Batch, encodeBatch(raw));
}

/** Authenticates as a primary with journal `journalId` (at `epoch`), sends one batch, returns the answer. */
export async function sendBatch(port: number, secret: Buffer, journalId: string, entries: Array<Entry | Buffer>, epoch = 1) {
  const { conn, reply } = await connectAsPrimary(port, secret, journalId, epoch);
  try {
    if (reply.type !== FrameType.Welcome) return { welcome: undefined, type: FrameType[reply.type], body: unpackBody<Record<string, unknown>>(reply) };
    const welcome = unpackBody<{ appliedSeq: number }>(reply);
    sendEntries(conn, entries);
    const answer = await conn.read(5000);
    return { welcome, type: answer ? FrameType[answer.type] : 'closed', body: answer ? unpackBody<Record<string, unknown>>(answer) : {} };
  } finally {
    conn.close();
  }
}
