import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { SpdyConnection, readableSource, type SpdyStream } from './connection.js';

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** A SPDY client and server over loopback TCP; the server relays each stream to a fresh connection to `port`. */
async function relayingPair(port: number) {
  const relayed: SpdyStream[] = [];
  const front = createServer((socket) => {
    const conn = new SpdyConnection(socket, { role: 'server' });
    conn.on('stream', (stream: SpdyStream) => {
      const target: Socket = connect(port, '127.0.0.1');
      // Late on purpose: the client's first bytes (even its FIN) arrive before the relay starts.
      target.once('connect', () => setTimeout(() => stream.relay(readableSource(target), target), 100));
      target.on('error', () => stream.reset());
      relayed.push(stream);
    });
  });
  const frontPort = await listen(front);
  const socket = connect(frontPort, '127.0.0.1');
  await once(socket, 'connect');
  const client = new SpdyConnection(socket, { role: 'client' });
  return { client, relayed, close: () => (client.destroy(), front.close()) };
}

/** Writes `size` bytes to the stream while reading what comes back; both digests. */
async function echoThrough(stream: SpdyStream, size: number) {
  const sent = createHash('sha256');
  const received = createHash('sha256');
  let got = 0;
  const done = new Promise<void>((resolve, reject) => {
    stream.on('data', (chunk: Buffer) => {
      received.update(chunk);
      got += chunk.length;
      // Like kubectl's users: end only once everything came back.
      if (got >= size) stream.end();
    });
    stream.once('end', resolve);
    stream.once('error', reject);
  });
  for (let offset = 0, n = 0; offset < size; n++) {
    const chunk = Buffer.alloc(Math.min(1 << 20, size - offset), n % 251);
    chunk.writeUInt32BE(n, 0);
    sent.update(chunk);
    offset += chunk.length;
    if (!stream.write(chunk)) await once(stream, 'drain');
  }
  await done;
  return { sent: sent.digest('hex'), received: received.digest('hex'), got };
}

describe('SpdyStream.relay', () => {
  it('carries 64 MiB each way through an echo server at once, in order, then ends both ways', async () => {
    const echo = createServer({ allowHalfOpen: true }, (socket) => socket.pipe(socket));
    const pair = await relayingPair(await listen(echo));
    try {
      const stream = await pair.client.openStream({ streamType: 'data' });
      const result = await echoThrough(stream, 64 * 1024 * 1024);
      assert.equal(result.got, 64 * 1024 * 1024);
      assert.equal(result.received, result.sent);
      // Both halves ended: the relayed stream closes on the server too.
      const [relayed] = pair.relayed;
      if (!relayed.closed) await once(relayed, 'close');
    } finally {
      pair.close();
      echo.close();
    }
  });

  it('forwards what arrived before the relay started, the end included', async () => {
    let received = '';
    const sink = createServer({ allowHalfOpen: true }, (socket) => {
      socket.on('data', (chunk: Buffer) => (received += chunk.toString()));
      socket.on('end', () => socket.end(`got ${received.length}`));
    });
    const pair = await relayingPair(await listen(sink));
    try {
      const stream = await pair.client.openStream({ streamType: 'data' });
      stream.end('early bytes');
      let reply = '';
      for await (const chunk of stream) reply += (chunk as Buffer).toString();
      assert.equal(received, 'early bytes');
      assert.equal(reply, 'got 11');
    } finally {
      pair.close();
      sink.close();
    }
  });
});
