/**
 * A TCP relay on 127.0.0.1 that holds every piece of data for `oneWayMs`
 * in each direction: a registry behind it answers as a distant one would
 * (each round trip costs 2 × oneWayMs), while bulk throughput stays that of
 * loopback. For benchmarks where the kernel has no netem.
 */
import { createConnection, createServer, type AddressInfo, type Socket } from 'node:net';

/** Bytes a direction may hold before its source is paused. */
const MAX_HELD = 8 * 1024 * 1024;

export interface DelayProxy {
  /** host:port to use instead of the target's. */
  host: string;
  close(): Promise<void>;
}

function relay(from: Socket, to: Socket, oneWayMs: number): void {
  let held = 0;
  from.on('data', (chunk: Buffer) => {
    held += chunk.length;
    if (held > MAX_HELD) from.pause();
    // Equal delays fire in the order they were set: the byte order is kept.
    setTimeout(() => {
      held -= chunk.length;
      if (!to.destroyed) to.write(chunk);
      if (held <= MAX_HELD && from.isPaused()) from.resume();
    }, oneWayMs);
  });
  from.on('end', () => setTimeout(() => to.end(), oneWayMs));
}

export async function startDelayProxy(target: string, oneWayMs: number): Promise<DelayProxy> {
  const [targetHost, targetPort] = [
    target.slice(0, target.lastIndexOf(':')),
    Number(target.split(':').pop()),
  ];
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = createConnection({ host: targetHost, port: targetPort });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.setNoDelay(true);
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
      s.on('close', () => {
        sockets.delete(s);
        // The other side ends after what is still held for it (`end` flushes what it queued).
        setTimeout(() => (s === client ? upstream : client).end(), oneWayMs + 20);
      });
    }
    relay(client, upstream, oneWayMs);
    relay(upstream, client, oneWayMs);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
