// The shipper's pacing: after a batch the backup made durable before it answered (a checkpoint), the next partial
// batch waits until CHECKPOINT_GAP_MS after the previous one was sent; batches the backup answers at once and
// flushes later go as soon as the journal takes their entries in. A real primary ships to a stand-in backup that
// answers each batch one way or the other.
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import { decodeEntry } from '../dist/journal/entry.js';
import { CHECKPOINT_GAP_MS } from '../dist/ship/shipper.js';
import { newNonce, proof } from '../dist/wire/auth.js';
import { decodeBatch, FrameType, PROTOCOL_VERSION, unpackBody } from '../dist/wire/frame.js';
import { PeerConnection } from '../dist/wire/peer.js';
import { layout, sh, startPrimary } from './helpers/cluster.js';

/** A backup that answers every batch: durable at once (`checkpoint`), or applied now and durable later. */
async function standIn(secret: Buffer, checkpoint: boolean) {
  const arrivals: Array<{ at: number; entries: number }> = [];
  const server = net.createServer(async (socket) => {
    const conn = new PeerConnection(socket);
    const hello = unpackBody<{ nonce: Uint8Array; journalId: string; epoch: number }>((await conn.read(10_000))!);
    const nonce = newNonce();
    conn.send(FrameType.Challenge, { version: PROTOCOL_VERSION, nonce, proof: proof(secret, 'backup', hello.nonce, nonce) });
    await conn.read(10_000); // the primary's proof: trusted here
    conn.send(FrameType.Welcome, { journalId: hello.journalId, appliedSeq: 0, epoch: hello.epoch, deferredFlush: !checkpoint });
    let durable = 0;
    for (let frame = await conn.read(); frame; frame = await conn.read()) {
      if (frame.type !== FrameType.Batch) continue;
      const entries = decodeBatch(frame.body);
      arrivals.push({ at: performance.now(), entries: entries.length });
      const last = decodeEntry(entries[entries.length - 1]!).seq;
      if (checkpoint) durable = last;
      conn.send(FrameType.Ack, checkpoint ? { appliedSeq: last } : { appliedSeq: durable, replayedSeq: last });
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, arrivals, close: () => new Promise((r) => server.close(r)) };
}

/** Creates, renames and unlinks files through the mount for a second, from a process of its own. */
const metadataLoop = `node -e '
const fs = require("fs"); const end = Date.now() + 1000;
for (let i = 0; Date.now() < end; i++) { fs.writeFileSync("f" + i, "x"); fs.renameSync("f" + i, "g" + i); fs.unlinkSync("g" + i); }'`;

/** The gaps between batches sent while the loop ran (the first ones, at connect, left out). */
function gaps(arrivals: Array<{ at: number }>): number[] {
  return arrivals.slice(3).map((a, i) => a.at - arrivals[i + 2]!.at).sort((a, b) => a - b);
}

for (const checkpoint of [true, false]) {
  t.test(checkpoint ? 'batches the backup checkpoints: the next goes no sooner than the gap after it' : 'batches the backup flushes later: the next goes once taken in, not paced', async (t) => {
    const { prod, pstate, secret } = layout(t);
    const backup = await standIn(Buffer.from(fs.readFileSync(secret, 'utf8').trim()), checkpoint);
    t.teardown(backup.close);
    const primary = await startPrimary(t, { mount: prod, state: pstate, to: `127.0.0.1:${backup.port}`, secret });
    await primary.waitFor('connected to backup; shipping');
    await sh(metadataLoop, prod);
    const g = gaps(backup.arrivals);
    t.ok(g.length > 20, `${g.length} batches while the loop ran`);
    // Arrivals, as this process reads them: one read late (a loaded machine) shortens the gap after it, so the
    // paced case is judged by the median (unpaced, they go as the journal takes entries in: about 3 ms apart on an
    // idle machine), the other by the fastest.
    const p10 = g[Math.floor(g.length * 0.1)]!;
    const median = g[Math.floor(g.length / 2)]!;
    const what = `p10 ${p10.toFixed(2)} ms, median ${median.toFixed(2)} ms apart`;
    if (checkpoint) t.ok(median >= CHECKPOINT_GAP_MS * 0.9, `at least ${CHECKPOINT_GAP_MS} ms apart: ${what}`);
    else t.ok(p10 < CHECKPOINT_GAP_MS * 0.9, `sent as taken in, many sooner than the pace: ${what}`);
  });
}
