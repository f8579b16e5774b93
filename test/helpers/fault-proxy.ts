// A fault-injecting TCP proxy for tests: pass, delay, refuse, drop connections, blackhole, flip a byte.
import net from 'node:net';

export type Direction = 'toBackup' | 'toPrimary';

export class FaultProxy {
  readonly port: number;
  /** New connections are closed at once (the route is down). */
  refusing = false;
  /** Bytes are swallowed in both directions, sockets stay open (a silent network). */
  blackhole = false;
  delayMs = 0;
  private flips: Array<{ dir: Direction; skip: number }> = [];
  private readonly pairs = new Set<[net.Socket, net.Socket]>();
  connections = 0;

  private constructor(private readonly server: net.Server, port: number) {
    this.port = port;
  }

  static async start(targetPort: number): Promise<FaultProxy> {
    let proxy: FaultProxy | undefined;
    const server = net.createServer((client) => proxy!.accept(client, targetPort));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    proxy = new FaultProxy(server, (server.address() as net.AddressInfo).port);
    return proxy;
  }

  /** Flips one bit in the byte `skip` bytes into the traffic going `dir` from now on. */
  flipByte(dir: Direction, skip = 64): void {
    this.flips.push({ dir, skip });
  }

  /** Cuts every open connection. */
  dropAll(): void {
    for (const [a, b] of this.pairs) {
      a.destroy();
      b.destroy();
    }
    this.pairs.clear();
  }

  down(): void {
    this.refusing = true;
    this.dropAll();
  }

  up(): void {
    this.refusing = false;
    this.blackhole = false;
  }

  async close(): Promise<void> {
    this.dropAll();
    await new Promise((r) => this.server.close(r));
  }

  private accept(client: net.Socket, targetPort: number): void {
    if (this.refusing) {
      client.destroy();
      return;
    }
    this.connections++;
    const upstream = net.connect({ host: '127.0.0.1', port: targetPort });
    const pair: [net.Socket, net.Socket] = [client, upstream];
    this.pairs.add(pair);
    const end = () => {
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    this.pipe(client, upstream, 'toBackup');
    this.pipe(upstream, client, 'toPrimary');
  }

  private pipe(from: net.Socket, to: net.Socket, dir: Direction): void {
    from.on('data', (chunk: Buffer) => {
      if (this.blackhole) return;
      const flip = this.flips.find((f) => f.dir === dir);
      if (flip) {
        if (flip.skip < chunk.length) {
          chunk = Buffer.from(chunk);
          chunk[flip.skip] ^= 0x20;
          this.flips.splice(this.flips.indexOf(flip), 1);
        } else {
          flip.skip -= chunk.length;
        }
      }
      if (this.delayMs) setTimeout(() => to.write(chunk), this.delayMs);
      else to.write(chunk);
    });
  }
}
