import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Duplex, PassThrough } from 'node:stream';
import { once } from 'node:events';
import { SpdyConnection, type SpdyStream } from './connection.js';
import { FrameParser, encodeFrame, type Frame } from './frames.js';
import { HeaderCodec } from './headers.js';

/** Two connected in-memory sockets; `chop` re-splits what travels client → server. */
function socketPair(chop?: (chunk: Buffer) => Buffer[]) {
  const toServer = new PassThrough();
  const toClient = new PassThrough();
  const feed = new PassThrough();
  toServer.on('data', (chunk: Buffer) => {
    for (const piece of chop ? chop(chunk) : [chunk]) feed.write(piece);
  });
  toServer.on('end', () => feed.end());
  return {
    client: Duplex.from({ readable: toClient, writable: toServer }),
    server: Duplex.from({ readable: feed, writable: toClient }),
  };
}

async function read(stream: SpdyStream): Promise<string> {
  let text = '';
  for await (const chunk of stream) text += (chunk as Buffer).toString();
  return text;
}

describe('SPDY connection', () => {
  for (const [name, chop] of [
    ['whole reads', undefined],
    ['one-byte reads', (c: Buffer) => [...c].map((b) => Buffer.from([b]))],
  ] as const) {
    it(`opens streams, carries data both ways and half-closes with ${name}`, async () => {
      const { client, server } = socketPair(chop);
      const serverConn = new SpdyConnection(server, { role: 'server' });
      const clientConn = new SpdyConnection(client, { role: 'client' });
      serverConn.on('stream', (stream: SpdyStream) => {
        assert.equal(stream.header('streamType'), 'echo');
        void read(stream).then((text) => stream.end(text.toUpperCase()));
      });
      const streams = await Promise.all([1, 2, 3].map(() => clientConn.openStream({ streamType: 'echo' })));
      assert.deepEqual(
        streams.map((s) => s.id),
        [1, 3, 5],
      );
      const replies = streams.map((s) => read(s));
      streams.forEach((s, i) => s.end(`hello ${i} ${'x'.repeat(100_000)}`));
      const texts = await Promise.all(replies);
      texts.forEach((t, i) => assert.equal(t, `HELLO ${i} ${'X'.repeat(100_000)}`));
      clientConn.close();
      await once(serverConn, 'close');
    });
  }

  it('answers PING, resets a stream on RST_STREAM and closes on GOAWAY (coalesced frames)', async () => {
    const { client, server } = socketPair();
    const serverConn = new SpdyConnection(server, { role: 'server' });
    const got: SpdyStream[] = [];
    serverConn.on('stream', (s: SpdyStream) => got.push(s));
    const codec = new HeaderCodec();
    const frames: Frame[] = [
      {
        type: 'syn_stream',
        streamId: 1,
        associatedId: 0,
        priority: 0,
        flags: 0,
        headerBlock: codec.compress([['streamtype', 'data']]),
      },
      { type: 'data', streamId: 1, flags: 0, data: Buffer.from('abc') },
      { type: 'ping', id: 7 },
      { type: 'settings', flags: 0, payload: Buffer.alloc(4) },
      { type: 'window_update', streamId: 1, delta: 100 },
      { type: 'rst_stream', streamId: 1, status: 5 },
      { type: 'goaway', lastGoodStreamId: 0, status: 0 },
    ];
    const parser = new FrameParser();
    const replies: Frame[] = [];
    client.on('data', (chunk: Buffer) => {
      replies.push(...parser.push(chunk));
      // A peer closes its side after GOAWAY.
      if (replies.some((f) => f.type === 'goaway')) client.end();
    });
    client.write(Buffer.concat(frames.map(encodeFrame)));
    await once(serverConn, 'close').catch(() => undefined);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(got.length, 1);
    assert.equal(got[0].destroyed, true);
    assert.deepEqual(
      replies.map((f) => f.type),
      ['syn_reply', 'ping', 'goaway'],
    );
    assert.deepEqual(replies[1], { type: 'ping', id: 7 });
    codec.close();
  });

  it('closes the connection on a malformed header block', async () => {
    const { client, server } = socketPair();
    const serverConn = new SpdyConnection(server, { role: 'server' });
    const errors: Error[] = [];
    serverConn.on('error', (err: Error) => errors.push(err));
    const closed = new Promise((resolve) => serverConn.once('close', resolve));
    client.write(
      encodeFrame({
        type: 'syn_stream',
        streamId: 1,
        associatedId: 0,
        priority: 0,
        flags: 0,
        headerBlock: Buffer.from('not zlib at all'),
      }),
    );
    await closed;
    assert.match(errors[0]?.message ?? '', /does not decompress/);
  });

  it('closes an idle connection', async () => {
    const { client, server } = socketPair();
    const duplex = server as Duplex & { setTimeout?: (ms: number, cb: () => void) => void };
    duplex.setTimeout = (ms, cb) => setTimeout(cb, ms).unref();
    const serverConn = new SpdyConnection(duplex, { role: 'server', idleTimeoutMs: 50 });
    client.resume();
    await once(serverConn, 'idle');
  });
});
